// Runs through the official Node SDK (`openai`, pinned in package.json), written the way
// OpenAI's Node docs write them: `runs.stream(...)` with the SDK's event emitter
// (`toolCallCreated`, `toolCallDelta`, `textDelta`), `submitToolOutputsStream` and
// `createAndPoll`. Every test runs on both backends (see oasis.mjs); both models follow the
// same conventions: a fenced python block is a code cell to run, a fenced `call NAME` block
// holds the JSON arguments of a call of function NAME.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  BACKENDS,
  CODE_INTERPRETER,
  DISPLAY_QUIZ,
  FIB_CODE,
  MATH_TUTOR,
  POLL_MS,
  QUIZ,
  QUIZ_2,
  SCRIPTED_MODEL,
  assertCompleted,
  codeCalls,
  fenced,
  logsOf,
  recordEvents,
  replyOf,
  show,
  stepsOf,
} from './oasis.mjs';

const LIMIT = { timeout: 90_000 }; // a hung server fails a test, not the whole suite

for (const [name, backend] of BACKENDS) {
  describe(`${name} backend`, () => {
    test('toolCallDelta prints each code cell as it is written, then its output', LIMIT, async () => {
      const { client, model } = backend();
      const assistant = await client.beta.assistants.create({
        name: 'Math Tutor',
        instructions: MATH_TUTOR,
        model,
        tools: [CODE_INTERPRETER],
      });
      const second = "print('second', 2 ** 10)";
      const thread = await client.beta.threads.create({
        messages: [{ role: 'user', content: 'Two cells.\n\n' + fenced(FIB_CODE) + '\n\n' + fenced(second) }],
      });

      // The handler of OpenAI's Node docs, printing into `printed`, plus what it saw per call.
      let printed = '';
      const calls = []; // per toolCallCreated: { type, id, code, inputDeltas, logs }
      const stream = client.beta.threads.runs
        .stream(thread.id, { assistant_id: assistant.id })
        .on('textCreated', () => {
          printed += '\nassistant > ';
        })
        .on('textDelta', (textDelta) => {
          printed += textDelta.value;
        })
        .on('toolCallCreated', (toolCall) => {
          printed += `\nassistant > ${toolCall.type}\n\n`;
          calls.push({ type: toolCall.type, id: toolCall.id, code: '', inputDeltas: 0, logs: '' });
        })
        .on('toolCallDelta', (delta, snapshot) => {
          const call = calls.at(-1);
          if (delta.type === 'code_interpreter') {
            if (delta.code_interpreter.input) {
              printed += delta.code_interpreter.input;
              call.code += delta.code_interpreter.input;
              call.inputDeltas += 1;
            }
            if (delta.code_interpreter.outputs) {
              printed += '\noutput >\n';
              for (const output of delta.code_interpreter.outputs) {
                if (output.type === 'logs') {
                  printed += `\n${output.logs}\n`;
                  call.logs += output.logs;
                }
              }
            }
          }
        });
      const seen = recordEvents(stream);
      const run = await stream.finalRun();
      assertCompleted(run);

      const stored = codeCalls(await stepsOf(client, run));
      assert.equal(stored.length, 2, show(seen));
      assert.deepEqual(
        calls.map((c) => [c.type, c.id]),
        stored.map((c) => ['code_interpreter', c.id]),
        'toolCallCreated once per call, in order' + show(seen),
      );
      // Each call's code reaches toolCallDelta (none of it hides in the creation delta), and
      // its pieces add up to the stored input.
      assert.deepEqual(
        calls.map((c) => c.code),
        stored.map((c) => c.code_interpreter.input),
        'code collected from toolCallDelta vs the stored steps' + show(seen),
      );
      assert.equal(stored[0].code_interpreter.input.trim(), FIB_CODE);
      assert.equal(stored[1].code_interpreter.input.trim(), second);
      if (model === SCRIPTED_MODEL) {
        // The upstream writes the call in small pieces: the user watches the code being typed.
        assert.ok(
          calls[0].inputDeltas > 1,
          `the first cell arrived in ${calls[0].inputDeltas} toolCallDelta event(s)` + show(seen),
        );
      }
      // The outputs' logs arrive in a later delta of the same call.
      assert.deepEqual(
        calls.map((c) => c.logs),
        stored.map(logsOf),
        'logs from toolCallDelta vs the stored steps' + show(seen),
      );
      assert.equal(calls[0].logs.trim(), '55\n[0, 1, 1, 2, 3]');
      assert.equal(calls[1].logs.trim(), 'second 1024');
      assert.ok(
        printed.includes(`assistant > code_interpreter\n\n${stored[0].code_interpreter.input}\noutput >\n\n55\n`),
        printed,
      );
      const { text } = await replyOf(client, run);
      assert.ok(printed.endsWith(`\nassistant > ${text}`), printed);
    });

    test('toolCallDelta collects the arguments of two parallel function calls', LIMIT, async () => {
      const { client, model } = backend();
      const assistant = await client.beta.assistants.create({
        name: 'Math Tutor',
        instructions: MATH_TUTOR,
        model,
        tools: [CODE_INTERPRETER, { type: 'function', function: DISPLAY_QUIZ }],
      });
      const thread = await client.beta.threads.create({
        messages: [
          {
            role: 'user',
            content:
              'Two quizzes, please.\n\n' +
              fenced(JSON.stringify(QUIZ, null, 2), 'call display_quiz') +
              '\n\n' +
              fenced(JSON.stringify(QUIZ_2), 'call display_quiz'),
          },
        ],
      });

      // What an app collecting function arguments does: start at toolCallCreated, append
      // every toolCallDelta's piece, read the result when the run requires action.
      const args = {};
      const argDeltas = {}; // call id -> how many toolCallDelta events carried a piece
      let current = null;
      let required = null;
      const stream = client.beta.threads.runs
        .stream(thread.id, { assistant_id: assistant.id })
        .on('toolCallCreated', (toolCall) => {
          current = toolCall.id;
          if (toolCall.type === 'function') args[toolCall.id] = '';
        })
        .on('toolCallDelta', (delta, snapshot) => {
          if (delta.type === 'function') {
            args[current] += delta.function.arguments ?? '';
            if (delta.function.arguments) argDeltas[current] = (argDeltas[current] ?? 0) + 1;
          }
        })
        .on('event', (event) => {
          if (event.event === 'thread.run.requires_action') {
            required = event.data.required_action.submit_tool_outputs.tool_calls;
          }
        });
      const seen = recordEvents(stream);
      const run = await stream.finalRun();
      assert.equal(run.status, 'requires_action', `${run.status}: ${JSON.stringify(run.last_error)}` + show(seen));
      const stored = run.required_action.submit_tool_outputs.tool_calls;
      assert.deepEqual(
        stored.map((c) => [c.type, c.function.name, JSON.parse(c.function.arguments)]),
        [
          ['function', 'display_quiz', QUIZ],
          ['function', 'display_quiz', QUIZ_2],
        ],
      );
      assert.deepEqual(
        required.map((c) => c.id),
        stored.map((c) => c.id),
      );
      assert.deepEqual(
        args,
        Object.fromEntries(stored.map((c) => [c.id, c.function.arguments])),
        'arguments collected from toolCallDelta vs required_action' + show(seen),
      );
      if (model === SCRIPTED_MODEL) {
        // The upstream writes the arguments in small pieces, and the first call reaches the app
        // as written. (The upstream interleaves the two calls' pieces; the SDK takes a delta for
        // another call as the end of the current one, so the second call can only follow.)
        assert.ok(
          argDeltas[stored[0].id] > 1,
          `the first call's arguments arrived in ${argDeltas[stored[0].id] ?? 0} toolCallDelta event(s)` + show(seen),
        );
      }
      const steps = await stepsOf(client, run);
      assert.deepEqual(
        steps.map((s) => [s.type, s.status]),
        [['tool_calls', 'in_progress']],
      );
      assert.deepEqual(
        steps[0].step_details.tool_calls.map((tc) => [tc.id, tc.function.arguments]),
        stored.map((c) => [c.id, c.function.arguments]),
      );

      // Answering both (in reverse order) over a stream finishes the run with a reply.
      const outputs = { [stored[0].id]: '["first"]', [stored[1].id]: '["second"]' };
      const pieces = [];
      const answer = client.beta.threads.runs
        .submitToolOutputsStream(run.id, {
          thread_id: thread.id,
          tool_outputs: Object.entries(outputs)
            .reverse()
            .map(([tool_call_id, output]) => ({ tool_call_id, output })),
        })
        .on('textDelta', (textDelta) => pieces.push(textDelta.value));
      const seen2 = recordEvents(answer);
      const final = await answer.finalRun();
      assertCompleted(final);
      assert.equal(final.id, run.id);
      assert.equal(seen2.at(-1), 'thread.run.completed', show(seen2));
      const { text } = await replyOf(client, final);
      assert.equal(pieces.join(''), text, show(seen2));
      const lines = text.split('\n');
      assert.ok(lines.includes('display_quiz returned: ["first"]'), text);
      assert.ok(lines.includes('display_quiz returned: ["second"]'), text);
      const [step] = await stepsOf(client, final);
      assert.deepEqual(
        Object.fromEntries(step.step_details.tool_calls.map((tc) => [tc.id, tc.function.output])),
        outputs,
      );
    });

    test('textDelta pieces add up to the math tutor answer', LIMIT, async () => {
      const { client, model } = backend();
      const assistant = await client.beta.assistants.create({ name: 'Math Tutor', instructions: MATH_TUTOR, model });
      const thread = await client.beta.threads.create();
      const q = 'What is 3x + 11 = 14?';
      await client.beta.threads.messages.create(thread.id, { role: 'user', content: q });

      let created = 0;
      const pieces = [];
      let snapshot = null;
      const stream = client.beta.threads.runs
        .stream(thread.id, { assistant_id: assistant.id })
        .on('textCreated', () => {
          created += 1;
        })
        .on('textDelta', (textDelta, textSnapshot) => {
          pieces.push(textDelta.value);
          snapshot = textSnapshot.value;
        });
      const seen = recordEvents(stream);
      const run = await stream.finalRun();
      assertCompleted(run);
      assert.deepEqual(seen.slice(0, 3), ['thread.run.created', 'thread.run.queued', 'thread.run.in_progress']);
      assert.equal(seen.at(-1), 'thread.run.completed', show(seen));

      const { message, text } = await replyOf(client, run);
      assert.equal(created, 1, show(seen));
      assert.equal(pieces.join(''), text, show(seen));
      assert.equal(snapshot, text, 'the last textDelta snapshot is the whole answer');
      const finals = await stream.finalMessages();
      assert.deepEqual(
        finals.map((m) => [m.id, m.content[0].text.value]),
        [[message.id, text]],
      );
      if (model === SCRIPTED_MODEL) {
        assert.equal(text, `Scripted reply to: ${q}`);
        assert.ok(pieces.length > 1, `the answer arrived in ${pieces.length} textDelta event(s)` + show(seen));
      } else {
        assert.ok(text.includes('oasis-local'), text);
      }
    });

    test('the Fibonacci cookbook flow with createAndPoll', LIMIT, async () => {
      const { client, model } = backend();
      const assistant = await client.beta.assistants.create({
        name: 'Math Tutor',
        instructions: MATH_TUTOR,
        model,
        tools: [CODE_INTERPRETER],
      });
      const thread = await client.beta.threads.create();
      await client.beta.threads.messages.create(thread.id, {
        role: 'user',
        content: 'Generate the first 20 fibbonaci numbers with code.\n\n' + fenced(FIB_CODE),
      });
      const run = await client.beta.threads.runs.createAndPoll(
        thread.id,
        { assistant_id: assistant.id },
        { pollIntervalMs: POLL_MS },
      );
      assertCompleted(run);
      assert.deepEqual(
        run.tools.map((t) => t.type),
        ['code_interpreter'],
      );
      const steps = await stepsOf(client, run);
      assert.deepEqual(
        steps.map((s) => [s.type, s.status]),
        [
          ['tool_calls', 'completed'],
          ['message_creation', 'completed'],
        ],
      );
      const [call] = codeCalls(steps);
      assert.equal(call.code_interpreter.input.trim(), FIB_CODE);
      assert.equal(logsOf(call).trim(), '55\n[0, 1, 1, 2, 3]'); // stdout, then the last expression
      const { message, text } = await replyOf(client, run);
      assert.equal(steps[1].step_details.message_creation.message_id, message.id);
      assert.ok(text.includes('55') && text.includes('[0, 1, 1, 2, 3]'), text);
    });
  });
}
