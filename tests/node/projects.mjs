// Projects through the official Node SDK (run by tests/oasis/node_sdk.rs's
// `the_node_sdk_sees_only_its_projects_objects`, not by the main suite): two projects' clients
// on one Oasis never see each other's objects, and a project at its run limit gets the SDK's
// RateLimitError. Keys: OASIS_KEY_A, OASIS_KEY_B (projects alpha and beta) and
// OASIS_KEY_LIMITED (project gamma, at most one unfinished run); server: OASIS_BASE_URL.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI, { toFile } from 'openai';

const SECRET = 'alpha-node-secret-5d21';
const client = (v) =>
  new OpenAI({ baseURL: `${process.env.OASIS_BASE_URL}/v1`, apiKey: process.env[v], maxRetries: 0 });

test("another project's objects are not found through the SDK", async () => {
  const a = client('OASIS_KEY_A');
  const b = client('OASIS_KEY_B');
  const file = await a.files.create({
    file: await toFile(Buffer.from(`${SECRET}\n`), 'alpha.txt'),
    purpose: 'assistants',
  });
  const asst = await a.beta.assistants.create({
    model: 'oasis-local',
    tools: [{ type: 'code_interpreter' }],
    tool_resources: { code_interpreter: { file_ids: [file.id] } },
  });
  const thread = await a.beta.threads.create({
    messages: [{ role: 'user', content: "```python\nprint(open('/mnt/data/alpha.txt').read().strip())\n```" }],
  });
  const run = await a.beta.threads.runs.createAndPoll(thread.id, { assistant_id: asst.id }, { pollIntervalMs: 50 });
  assert.equal(run.status, 'completed');

  const bAsst = await b.beta.assistants.create({ model: 'oasis-local' });
  const attempts = [
    () => b.files.retrieve(file.id),
    () => b.files.content(file.id),
    () => b.beta.assistants.retrieve(asst.id),
    () => b.beta.threads.retrieve(thread.id),
    () => b.beta.threads.messages.list(thread.id),
    () => b.beta.threads.runs.retrieve(run.id, { thread_id: thread.id }),
    () => b.beta.threads.runs.create(thread.id, { assistant_id: bAsst.id }),
    () => b.beta.threads.createAndRun({ assistant_id: asst.id }),
  ];
  for (const attempt of attempts) {
    await assert.rejects(attempt, (e) => e instanceof OpenAI.NotFoundError, String(attempt));
  }
  // A stream on another project's thread fails before any event.
  await assert.rejects(
    () => b.beta.threads.runs.stream(thread.id, { assistant_id: bAsst.id }).finalRun(),
    (e) => e instanceof OpenAI.NotFoundError,
  );
  const listed = [];
  for await (const f of b.files.list()) listed.push(f.id);
  assert.ok(!listed.includes(file.id));
  // A's objects are unchanged.
  const content = await (await a.files.content(file.id)).text();
  assert.equal(content, `${SECRET}\n`);
});

test('a project at its run limit gets a RateLimitError', async () => {
  const g = client('OASIS_KEY_LIMITED');
  const asst = await g.beta.assistants.create({
    model: 'oasis-local',
    tools: [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object', properties: {} } } }],
  });
  const waiting = await g.beta.threads.createAndRunPoll(
    { assistant_id: asst.id, thread: { messages: [{ role: 'user', content: '```call lookup\n{}\n```' }] } },
    { pollIntervalMs: 50 },
  );
  assert.equal(waiting.status, 'requires_action');
  const other = await g.beta.threads.create();
  await assert.rejects(
    () => g.beta.threads.runs.create(other.id, { assistant_id: asst.id }),
    (e) => e instanceof OpenAI.RateLimitError && e.status === 429 && e.code === 'rate_limit_exceeded',
  );
  await g.beta.threads.runs.cancel(waiting.id, { thread_id: waiting.thread_id });
  const run = await g.beta.threads.runs.createAndPoll(other.id, { assistant_id: asst.id }, { pollIntervalMs: 50 });
  assert.equal(run.status, 'completed');
});
