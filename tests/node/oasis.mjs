// Shared setup of the Node SDK suite: the two Oasis servers (OASIS_BASE_URL: built-in model;
// OASIS_UPSTREAM_OASIS_URL: upstream is tests/python/scripted_upstream.py), the cookbook's
// payloads (copied from tests/python/test_runs.py) and small helpers. Run by
// tests/oasis/node_sdk.rs, which starts both servers and the scripted upstream.

import assert from 'node:assert/strict';
import OpenAI from 'openai';

/** The scripted upstream's one model (`scripted_upstream.MODEL`). */
export const SCRIPTED_MODEL = 'scripted-model';
export const POLL_MS = 50;
export const MATH_TUTOR = 'You are a personal math tutor. Answer questions briefly, in a sentence or less.';
export const CODE_INTERPRETER = { type: 'code_interpreter' };

// The cookbook's quiz function.
export const DISPLAY_QUIZ = {
  name: 'display_quiz',
  description:
    'Displays a quiz to the student, and returns the student\'s response. A single quiz can have multiple questions.',
  parameters: {
    type: 'object',
    properties: {
      title: { type: 'string' },
      questions: {
        type: 'array',
        description: 'An array of questions, each with a title and potentially options (if multiple choice).',
        items: {
          type: 'object',
          properties: {
            question_text: { type: 'string' },
            question_type: { type: 'string', enum: ['MULTIPLE_CHOICE', 'FREE_RESPONSE'] },
            choices: { type: 'array', items: { type: 'string' } },
          },
          required: ['question_text'],
        },
      },
    },
    required: ['title', 'questions'],
  },
};
export const QUIZ = {
  title: 'Mathematics Quiz',
  questions: [
    {
      question_text: 'Explain why the square root of a negative number is not a real number.',
      question_type: 'FREE_RESPONSE',
    },
    {
      question_text: 'What is the value of x if 3x + 11 = 14?',
      question_type: 'MULTIPLE_CHOICE',
      choices: ['0', '1', '2', '3'],
    },
  ],
};
export const QUIZ_2 = {
  title: 'Geometry Quiz',
  questions: [{ question_text: 'How many sides does a hexagon have?', question_type: 'FREE_RESPONSE' }],
};

export const FIB_CODE = `def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

fibs = [fib(i) for i in range(20)]
print(fib(10))
fibs[:5]`;

function required(name) {
  const v = process.env[name];
  // Both servers are required: a missing one is an error, not a skip.
  if (!v) throw new Error(`${name} is not set: run this suite through \`cargo test --test oasis node_sdk\``);
  return v;
}

function makeClient(base) {
  return new OpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-anything', maxRetries: 0, timeout: 60_000 });
}

/** [name, () => ({ client, model })] per backend: the built-in model (asked for "gpt-4o", as
 * the cookbook does) and the scripted upstream model. */
export const BACKENDS = [
  ['local', () => ({ client: makeClient(required('OASIS_BASE_URL')), model: 'gpt-4o' })],
  ['upstream', () => ({ client: makeClient(required('OASIS_UPSTREAM_OASIS_URL')), model: SCRIPTED_MODEL })],
];

export function fenced(code, info = 'python') {
  return '```' + info + '\n' + code + '\n```';
}

export async function all(page) {
  const out = [];
  for await (const item of page) out.push(item);
  return out;
}

export async function stepsOf(client, run) {
  return all(client.beta.threads.runs.steps.list(run.id, { thread_id: run.thread_id, order: 'asc' }));
}

export function codeCalls(steps) {
  return steps
    .filter((s) => s.type === 'tool_calls')
    .flatMap((s) => s.step_details.tool_calls)
    .filter((tc) => tc.type === 'code_interpreter');
}

export function logsOf(call) {
  return call.code_interpreter.outputs
    .filter((o) => o.type === 'logs')
    .map((o) => o.logs)
    .join('');
}

/** The run's one assistant message and its one text part's value. */
export async function replyOf(client, run) {
  const msgs = (await all(client.beta.threads.messages.list(run.thread_id, { order: 'asc' }))).filter(
    (m) => m.run_id === run.id,
  );
  assert.equal(msgs.length, 1, `run ${run.id} wrote ${msgs.length} messages`);
  const [m] = msgs;
  assert.deepEqual([m.role, m.status, m.assistant_id], ['assistant', 'completed', run.assistant_id]);
  const texts = m.content.filter((c) => c.type === 'text');
  assert.equal(texts.length, 1, `message ${m.id} has ${texts.length} text parts`);
  return { message: m, text: texts[0].text.value };
}

export function assertCompleted(run) {
  assert.equal(run.status, 'completed', `run ${run.id} ended ${run.status}: ${JSON.stringify(run.last_error)}`);
  assert.equal(run.last_error, null);
  assert.equal(run.required_action, null);
  assert.ok(run.completed_at, `run ${run.id} has no completed_at`);
}

/** Records every event the stream delivers, compactly, for failure messages: what the SDK saw. */
export function recordEvents(stream) {
  const seen = [];
  stream.on('event', (e) => {
    let line = e.event;
    if (e.event === 'thread.run.step.delta' || e.event === 'thread.message.delta') {
      line += ' ' + JSON.stringify(e.data.delta);
    } else if (e.event === 'thread.run.step.created' && e.data.step_details) {
      line += ' ' + JSON.stringify(e.data.step_details);
    } else if (e.event === 'thread.run.failed') {
      line += ' ' + JSON.stringify(e.data.last_error);
    }
    seen.push(line);
  });
  return seen;
}

export function show(seen) {
  return '\nevents the SDK saw:\n  ' + seen.join('\n  ');
}
