// Vector stores and the file_search tool through the official Node SDK (`openai`, pinned in
// package.json), written the way OpenAI's Node docs and file-search quickstart write them:
// `vectorStores.create`, `files.uploadAndPoll` / `createAndPoll` / `poll`,
// `fileBatches.uploadAndPoll` / `createAndPoll`, `vectorStores.search` with attribute filters,
// then an assistant with `file_search` answering from an uploaded manual, polled
// (`runs.createAndPoll`) and streamed (`runs.stream` with the SDK's event handlers). Mirrors
// tests/python/test_vector_stores.py. The store API is exercised on the built-in model's server;
// the question-and-citation flow on both backends (oasis-local quotes the best passages, each
// followed by its marker; the scripted upstream calls file_search and cites the best passage).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import OpenAI, { toFile } from 'openai';

import { BACKENDS, POLL_MS, SCRIPTED_MODEL, all, assertCompleted, recordEvents, show, stepsOf } from './oasis.mjs';

const LIMIT = { timeout: 90_000 }; // a hung server fails a test, not the whole suite
const POLL = { pollIntervalMs: POLL_MS };

// Sections without blank lines between them: oasis-local and the scripted upstream take the
// search tool's output apart at blank lines, so of a passage holding one they would quote only
// its first paragraph (here the title).
const MANUAL = `# Aquarium pump manual
## Cleaning the impeller
Switch the pump off and unplug it. Twist the front cover anticlockwise, pull the impeller out
and rinse it under lukewarm water. Never use soap: residues harm fish.
## Noise
A rattling pump usually has air trapped in it. Tilt it under water until the bubbles escape.
`;

const WARRANTY = `# Pump warranty
The pump is covered for two years from the date of purchase when used in fresh water. Keep the receipt.
`;

const RECIPES = `Pancakes: mix flour, eggs and milk into a smooth batter, rest it for half an hour,
then fry thin layers in a hot buttered pan until golden on both sides.

Lemonade: squeeze six lemons, add sugar syrup and cold water, and serve over ice.`;

const BLUE_FOX_HTML = `<!doctype html><html><head><title>Blue fox</title></head>
<body><h1>Foxes</h1><p>The blue fox sleeps under the fence.</p></body></html>`;

const INCLUDE_CONTENT = 'step_details.tool_calls[*].file_search.results[*].content';

/** A citation marker as Oasis writes it: 【search:result†file name】. */
const MARKER = /^【\d+:\d+†([^】]+)】$/;

function local() {
  return BACKENDS.find(([name]) => name === 'local')[1]().client;
}

/** An Uploadable for the SDK's upload helpers. */
function doc(name, data) {
  return toFile(Buffer.from(data), name);
}

async function upload(client, name, data) {
  return client.files.create({ file: await doc(name, data), purpose: 'assistants' });
}

async function search(client, vsId, body) {
  return all(client.vectorStores.search(vsId, body));
}

/** The message's one text part. */
function textOf(message) {
  const texts = message.content.filter((c) => c.type === 'text');
  assert.equal(texts.length, 1, `message ${message.id} has ${texts.length} text parts`);
  return texts[0].text;
}

/** The text's file_citation annotations, each checked: its offsets slice its marker out of the
 * value, and the file name in the marker is the cited file's. Returns them in order. */
function citationsOf(text, namesById) {
  const cites = text.annotations.filter((a) => a.type === 'file_citation');
  for (const a of cites) {
    assert.equal(text.value.slice(a.start_index, a.end_index), a.text, `offsets of ${JSON.stringify(a)} in ${text.value}`);
    const m = MARKER.exec(a.text);
    assert.ok(m, `not a citation marker: ${a.text}`);
    assert.ok(a.file_citation.file_id in namesById, `cites an unknown file: ${JSON.stringify(a)}`);
    assert.equal(m[1], namesById[a.file_citation.file_id], `the marker names another file than it cites: ${a.text}`);
  }
  // Nothing that looks like a marker of this run's searches is left as plain text.
  const markers = [...text.value.matchAll(/【\d+:\d+†[^】]+】/g)].map((m) => [m.index, m.index + m[0].length]);
  assert.deepEqual(
    markers,
    cites.map((a) => [a.start_index, a.end_index]),
    `every marker is a citation: ${text.value}`,
  );
  return cites;
}

/** What each backend answers to a question about a document (`fileId`), whose first cited
 * passage must say `words`; `cites` checked already. */
function assertAnswerQuotes(model, text, cites, fileId, words) {
  assert.ok(cites.length >= 1, `no file_citation in ${JSON.stringify(text)}`);
  assert.equal(cites[0].file_citation.file_id, fileId, text.value);
  // The text the first citation supports, what the reader sees before the marker.
  const supported = text.value.slice(0, cites[0].start_index);
  assert.ok(supported.includes(words), `the cited passage does not say "${words}": ${text.value}`);
  if (model === SCRIPTED_MODEL) {
    // `From the files: <best passage> 【0:0†name】`: one citation, at the very end.
    assert.ok(text.value.startsWith('From the files: '), text.value);
    assert.equal(cites.length, 1, text.value);
    assert.equal(cites[0].end_index, text.value.length, text.value);
  } else {
    // oasis-local quotes the best passages, each followed by its marker.
    assert.ok(text.value.startsWith('From your files:\n\n> '), text.value);
    assert.ok(cites.length <= 3, text.value);
    for (const a of cites) assert.ok(text.value.slice(0, a.start_index).endsWith(' '), text.value);
  }
}

describe('vector stores', () => {
  test('create with file_ids, poll each file, then search finds the right file', LIMIT, async () => {
    const client = local();
    const manual = await upload(client, 'pump-manual.md', MANUAL);
    const recipes = await upload(client, 'recipes.txt', RECIPES);
    const vs = await client.vectorStores.create({ name: 'docs', file_ids: [manual.id, recipes.id] });
    assert.deepEqual([vs.object, vs.name, vs.file_counts.total], ['vector_store', 'docs', 2]);

    // The SDK's own poll, per file, until each is read.
    for (const f of [manual, recipes]) {
      const polled = await client.vectorStores.files.poll(vs.id, f.id, POLL);
      assert.deepEqual([polled.id, polled.status, polled.last_error], [f.id, 'completed', null]);
    }
    const done = await client.vectorStores.retrieve(vs.id);
    assert.equal(done.status, 'completed');
    assert.deepEqual(
      [done.file_counts.completed, done.file_counts.in_progress, done.file_counts.failed, done.file_counts.total],
      [2, 0, 0, 2],
    );
    assert.ok(done.usage_bytes > 0, `usage_bytes ${done.usage_bytes}`);
    assert.ok(
      (await all(client.vectorStores.list())).some((s) => s.id === vs.id),
      'vectorStores.list shows the new store',
    );

    const files = await all(client.vectorStores.files.list(vs.id));
    assert.deepEqual(new Set(files.map((f) => f.id)), new Set([manual.id, recipes.id]));
    for (const f of files) {
      assert.deepEqual([f.object, f.vector_store_id, f.status, f.last_error], ['vector_store.file', vs.id, 'completed', null]);
      assert.deepEqual(f.chunking_strategy, {
        type: 'static',
        static: { max_chunk_size_tokens: 800, chunk_overlap_tokens: 400 },
      });
    }

    const wash = await search(client, vs.id, { query: 'how do I wash the impeller' });
    assert.ok(wash.length >= 1 && wash.length <= 10, `${wash.length} results`);
    assert.deepEqual([wash[0].file_id, wash[0].filename], [manual.id, 'pump-manual.md']);
    assert.ok(wash[0].content[0].text.includes('rinse it under lukewarm water'), wash[0].content[0].text);
    for (const r of wash) assert.ok(r.score >= 0 && r.score <= 1, `score ${r.score}`);
    assert.deepEqual(
      wash.map((r) => r.score),
      wash.map((r) => r.score).sort((a, b) => b - a),
      'best first',
    );

    const batter = await search(client, vs.id, { query: 'pancake batter', max_num_results: 1 });
    assert.deepEqual(
      batter.map((r) => [r.file_id, r.filename]),
      [[recipes.id, 'recipes.txt']],
    );

    const content = await all(client.vectorStores.files.content(recipes.id, { vector_store_id: vs.id }));
    const read = content.map((c) => c.text).join('');
    assert.ok(read.includes('Pancakes: mix flour') && read.includes('serve over ice'), read);
  });

  test('uploadAndPoll, attributes, a batch uploadAndPoll, filtered searches, delete', LIMIT, async () => {
    const client = local();
    const vs = await client.vectorStores.create({ name: 'filtered' });
    const red = await client.vectorStores.files.uploadAndPoll(
      vs.id,
      await doc('a.txt', 'The red fox jumps over the fence.'),
      POLL,
    );
    assert.deepEqual([red.status, red.vector_store_id], ['completed', vs.id]);
    const updated = await client.vectorStores.files.update(red.id, {
      vector_store_id: vs.id,
      attributes: { colour: 'red', year: 2020 },
    });
    assert.deepEqual(updated.attributes, { colour: 'red', year: 2020 });

    const batch = await client.vectorStores.fileBatches.uploadAndPoll(vs.id, {
      files: [await doc('b.html', BLUE_FOX_HTML)],
    });
    assert.deepEqual(
      [batch.object, batch.vector_store_id, batch.status, batch.file_counts.completed, batch.file_counts.total],
      ['vector_store.files_batch', vs.id, 'completed', 1, 1],
    );
    const inBatch = await all(client.vectorStores.fileBatches.listFiles(batch.id, { vector_store_id: vs.id }));
    assert.equal(inBatch.length, 1);
    const blue = inBatch[0];
    assert.equal(blue.status, 'completed');
    assert.equal((await client.files.retrieve(blue.id)).filename, 'b.html');
    await client.vectorStores.files.update(blue.id, {
      vector_store_id: vs.id,
      attributes: { colour: 'blue', year: 2024 },
    });
    const html = await all(client.vectorStores.files.content(blue.id, { vector_store_id: vs.id }));
    const htmlText = html.map((c) => c.text).join('');
    assert.ok(htmlText.includes('The blue fox sleeps under the fence.'), htmlText);
    assert.ok(!htmlText.includes('<p>'), `the HTML is read as text: ${htmlText}`);

    const both = await search(client, vs.id, { query: 'fox fence' });
    assert.deepEqual(new Set(both.map((r) => r.file_id)), new Set([red.id, blue.id]));
    const onlyBlue = await search(client, vs.id, {
      query: 'fox fence',
      filters: { type: 'eq', key: 'colour', value: 'blue' },
    });
    assert.deepEqual(
      onlyBlue.map((r) => [r.file_id, r.filename, r.attributes]),
      [[blue.id, 'b.html', { colour: 'blue', year: 2024 }]],
    );
    const recent = await search(client, vs.id, {
      query: 'fox',
      filters: {
        type: 'and',
        filters: [
          { type: 'gte', key: 'year', value: 2021 },
          { type: 'ne', key: 'colour', value: 'red' },
        ],
      },
    });
    assert.deepEqual(
      recent.map((r) => r.file_id),
      [blue.id],
    );
    const warm = await search(client, vs.id, {
      query: 'fox',
      filters: {
        type: 'or',
        filters: [
          { type: 'in', key: 'colour', value: ['red', 'orange'] },
          { type: 'lt', key: 'year', value: 2000 },
        ],
      },
    });
    assert.deepEqual(
      warm.map((r) => r.file_id),
      [red.id],
    );

    // Removing a file from the store keeps the File, and the store no longer finds it.
    const removed = await client.vectorStores.files.delete(red.id, { vector_store_id: vs.id });
    assert.deepEqual([removed.id, removed.object, removed.deleted], [red.id, 'vector_store.file.deleted', true]);
    assert.equal((await client.files.retrieve(red.id)).id, red.id);
    assert.deepEqual(
      (await all(client.vectorStores.files.list(vs.id))).map((f) => f.id),
      [blue.id],
    );
    assert.ok(
      (await search(client, vs.id, { query: 'red fox jumps' })).every((r) => r.file_id !== red.id),
      'a removed file is not found',
    );
    // Deleting the File removes it from the store.
    await client.files.delete(blue.id);
    assert.deepEqual(await all(client.vectorStores.files.list(vs.id)), []);
    assert.deepEqual(await search(client, vs.id, { query: 'blue fox' }), []);

    const gone = await client.vectorStores.delete(vs.id);
    assert.deepEqual([gone.id, gone.object, gone.deleted], [vs.id, 'vector_store.deleted', true]);
    await assert.rejects(client.vectorStores.retrieve(vs.id), OpenAI.NotFoundError);
  });

  test('createAndPoll with a static chunking strategy; files listed by status', LIMIT, async () => {
    const client = local();
    const vs = await client.vectorStores.create({ name: 'statuses' });
    // A long manual in small chunks: a search quotes the part that answers, not the whole file.
    const sections = [
      MANUAL,
      WARRANTY,
      ...['filter sponge', 'heater', 'light timer', 'air stone'].map(
        (part) =>
          `## The ${part}\nThe ${part} needs a look every month. Check that the ${part} sits firmly in its ` +
          `holder, that nothing blocks it, and that its cable shows no damage. Replace a worn ${part} at once.\n`,
      ),
    ];
    const long = await upload(client, 'long-manual.md', sections.join('\n'));
    const strategy = { type: 'static', static: { max_chunk_size_tokens: 100, chunk_overlap_tokens: 20 } };
    const good = await client.vectorStores.files.createAndPoll(
      vs.id,
      { file_id: long.id, chunking_strategy: strategy },
      POLL,
    );
    assert.deepEqual([good.id, good.status, good.last_error], [long.id, 'completed', null]);
    assert.deepEqual(good.chunking_strategy, strategy);
    const [best] = await search(client, vs.id, { query: 'how long is the warranty', max_num_results: 1 });
    assert.equal(best.file_id, long.id);
    const passage = best.content.map((c) => c.text).join('');
    assert.ok(passage.includes('covered for two years'), passage);
    assert.ok(passage.length < sections.join('\n').length / 2, `a small chunk, not the file: ${passage}`);

    // Files that cannot be read fail, with OpenAI's codes.
    const exe = await client.vectorStores.files.uploadAndPoll(vs.id, await doc('tool.exe', Buffer.from([0x4d, 0x5a, 0x90, 0])), POLL);
    assert.deepEqual([exe.status, exe.last_error?.code], ['failed', 'unsupported_file']);
    const junkBytes = Buffer.alloc(256 * 64, 0).map((_, i) => i % 256);
    const junk = await client.vectorStores.files.uploadAndPoll(vs.id, await doc('junk.txt', junkBytes), POLL);
    assert.deepEqual([junk.status, junk.last_error?.code], ['failed', 'invalid_file']);

    const ids = async (filter) => new Set((await all(client.vectorStores.files.list(vs.id, { filter }))).map((f) => f.id));
    assert.deepEqual(await ids('completed'), new Set([long.id]));
    assert.deepEqual(await ids('failed'), new Set([exe.id, junk.id]));
    assert.deepEqual(await ids('in_progress'), new Set());
    assert.deepEqual(await ids('cancelled'), new Set());
    const counts = (await client.vectorStores.retrieve(vs.id)).file_counts;
    assert.deepEqual(
      [counts.completed, counts.failed, counts.in_progress, counts.total],
      [1, 2, 0, 3],
    );
  });

  test('bad requests are OpenAI errors the SDK raises', LIMIT, async () => {
    const client = local();
    await assert.rejects(client.vectorStores.retrieve('vs_nope'), OpenAI.NotFoundError);
    const vs = await client.vectorStores.create();
    await assert.rejects(search(client, vs.id, { query: 'x', max_num_results: 51 }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, String(e));
      assert.equal(e.param, 'max_num_results');
      return true;
    });
    await assert.rejects(client.vectorStores.files.create(vs.id, { file_id: 'file-nope' }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, String(e));
      assert.equal(e.param, 'file_id');
      return true;
    });
    const f = await upload(client, 'x.txt', 'hello');
    await assert.rejects(
      client.vectorStores.files.create(vs.id, {
        file_id: f.id,
        chunking_strategy: { type: 'static', static: { max_chunk_size_tokens: 200, chunk_overlap_tokens: 150 } },
      }),
      (e) => {
        assert.ok(e instanceof OpenAI.BadRequestError, String(e));
        assert.equal(e.param, 'chunking_strategy.static.chunk_overlap_tokens');
        return true;
      },
    );
    const gone = await client.vectorStores.delete(vs.id);
    assert.deepEqual([gone.object, gone.deleted], ['vector_store.deleted', true]);
  });
});

for (const [name, backend] of BACKENDS) {
  describe(`${name} backend: file_search`, () => {
    test('ask a manual with createAndPoll: the answer cites the manual', LIMIT, async () => {
      const { client, model } = backend();
      const manual = await upload(client, 'pump-manual.md', MANUAL);
      const recipes = await upload(client, 'recipes.txt', RECIPES);
      const names = { [manual.id]: 'pump-manual.md', [recipes.id]: 'recipes.txt' };
      const vs = await client.vectorStores.create({ name: 'manuals' });
      const batch = await client.vectorStores.fileBatches.createAndPoll(
        vs.id,
        { file_ids: [manual.id, recipes.id] },
        POLL,
      );
      assert.deepEqual([batch.status, batch.file_counts.completed], ['completed', 2]);
      const assistant = await client.beta.assistants.create({
        name: 'Pump helper',
        model,
        instructions: "Answer from the user's files.",
        tools: [{ type: 'file_search' }],
        tool_resources: { file_search: { vector_store_ids: [vs.id] } },
      });
      assert.deepEqual(assistant.tool_resources.file_search.vector_store_ids, [vs.id]);
      const thread = await client.beta.threads.create({
        messages: [{ role: 'user', content: 'How do I clean the impeller?' }],
      });

      const run = await client.beta.threads.runs.createAndPoll(thread.id, { assistant_id: assistant.id }, POLL);
      assertCompleted(run);
      assert.deepEqual(
        run.tools.map((t) => t.type),
        ['file_search'],
      );
      const replies = await all(client.beta.threads.messages.list(thread.id, { run_id: run.id }));
      assert.equal(replies.length, 1);
      assert.deepEqual([replies[0].role, replies[0].assistant_id], ['assistant', assistant.id]);
      const text = textOf(replies[0]);
      const cites = citationsOf(text, names);
      assertAnswerQuotes(model, text, cites, manual.id, 'impeller');

      const steps = await stepsOf(client, run);
      assert.deepEqual(
        steps.map((s) => [s.type, s.status]),
        [
          ['tool_calls', 'completed'],
          ['message_creation', 'completed'],
        ],
      );
      assert.equal(steps[1].step_details.message_creation.message_id, replies[0].id);
      const calls = steps[0].step_details.tool_calls;
      assert.deepEqual(
        calls.map((c) => c.type),
        ['file_search'],
      );
      const results = calls[0].file_search.results;
      assert.deepEqual([results[0].file_id, results[0].file_name], [manual.id, 'pump-manual.md']);
      assert.ok(
        results.every((r) => r.content == null),
        'result content only with include[]',
      );
      const withContent = await client.beta.threads.runs.steps.retrieve(steps[0].id, {
        thread_id: thread.id,
        run_id: run.id,
        include: [INCLUDE_CONTENT],
      });
      const first = withContent.step_details.tool_calls[0].file_search.results[0];
      assert.equal(first.file_id, manual.id);
      assert.ok(first.content[0].text.includes('rinse it under lukewarm water'), first.content[0].text);
    });

    test("a message's attachment goes into the thread's own store and is cited", LIMIT, async () => {
      const { client, model } = backend();
      const assistant = await client.beta.assistants.create({
        model,
        instructions: "Answer from the user's files.",
        tools: [{ type: 'file_search' }],
      });
      const manual = await upload(client, 'pump-manual.md', MANUAL);
      const attachments = [{ file_id: manual.id, tools: [{ type: 'file_search' }] }];
      const thread = await client.beta.threads.create({
        messages: [{ role: 'user', content: 'How do I clean the impeller?', attachments }],
      });
      const storeIds = thread.tool_resources?.file_search?.vector_store_ids ?? [];
      assert.equal(storeIds.length, 1, `the thread's tool_resources: ${JSON.stringify(thread.tool_resources)}`);
      const [msg] = await all(client.beta.threads.messages.list(thread.id));
      assert.deepEqual(msg.attachments, attachments);
      // As OpenAI advises: wait until the store has read the file before running.
      const read = await client.vectorStores.files.poll(storeIds[0], manual.id, POLL);
      assert.equal(read.status, 'completed');

      const run = await client.beta.threads.runs.createAndPoll(thread.id, { assistant_id: assistant.id }, POLL);
      assertCompleted(run);
      const [reply] = await all(client.beta.threads.messages.list(thread.id, { run_id: run.id }));
      const text = textOf(reply);
      const cites = citationsOf(text, { [manual.id]: 'pump-manual.md' });
      assertAnswerQuotes(model, text, cites, manual.id, 'impeller');
    });

    test('the quickstart streamed: textDone and finalMessages carry the citation', LIMIT, async () => {
      const { client, model } = backend();
      // OpenAI's file-search quickstart: an assistant with file_search, a store filled with
      // fileBatches.uploadAndPoll, the assistant updated to use it, then a streamed run.
      const assistant = await client.beta.assistants.create({
        name: 'Pump helper',
        model,
        instructions: "Answer from the user's files.",
        tools: [{ type: 'file_search' }],
      });
      const vs = await client.vectorStores.create({ name: 'Pump manuals' });
      const batch = await client.vectorStores.fileBatches.uploadAndPoll(vs.id, {
        files: [
          await doc('pump-manual.md', MANUAL),
          await doc('pump-warranty.md', WARRANTY),
          await doc('recipes.txt', RECIPES),
        ],
      });
      assert.deepEqual([batch.status, batch.file_counts.completed], ['completed', 3]);
      const stored = await all(client.vectorStores.files.list(vs.id));
      const names = {};
      for (const f of stored) names[f.id] = (await client.files.retrieve(f.id)).filename;
      const warrantyId = Object.keys(names).find((id) => names[id] === 'pump-warranty.md');
      assert.ok(warrantyId, JSON.stringify(names));
      const updated = await client.beta.assistants.update(assistant.id, {
        tool_resources: { file_search: { vector_store_ids: [vs.id] } },
      });
      assert.deepEqual(updated.tool_resources.file_search.vector_store_ids, [vs.id]);

      const thread = await client.beta.threads.create({
        messages: [{ role: 'user', content: 'Is the pump covered by a warranty?' }],
      });
      let printed = '';
      const toolCalls = [];
      const doneTexts = [];
      const doneSteps = [];
      const doneMessages = [];
      const stream = client.beta.threads.runs
        .stream(thread.id, { assistant_id: assistant.id })
        .on('textCreated', () => {
          printed += '\nassistant > ';
        })
        .on('textDelta', (delta) => {
          printed += delta.value ?? '';
        })
        .on('toolCallCreated', (toolCall) => {
          printed += `\nassistant > ${toolCall.type}\n\n`;
          toolCalls.push(toolCall.type);
        })
        .on('textDone', (content, snapshot) => {
          doneTexts.push({ content, messageId: snapshot.id });
        })
        .on('messageDone', (message) => doneMessages.push(message))
        .on('runStepDone', (step) => doneSteps.push(step));
      const seen = recordEvents(stream);
      const run = await stream.finalRun();
      assertCompleted(run);
      assert.equal(seen.at(-1), 'thread.run.completed', show(seen));
      assert.deepEqual(toolCalls, ['file_search'], show(seen));

      // The search's step, as the stream closed it, shows what was found.
      const search = doneSteps.find((s) => s.type === 'tool_calls');
      assert.ok(search, show(seen));
      const [call] = search.step_details.tool_calls;
      assert.equal(call.type, 'file_search');
      assert.equal(call.file_search.results[0].file_id, warrantyId, JSON.stringify(call));

      // textDone: the finished text with its citation.
      assert.equal(doneTexts.length, 1, show(seen));
      const done = doneTexts[0].content;
      const cites = citationsOf(done, names);
      assertAnswerQuotes(model, done, cites, warrantyId, 'two years');
      assert.ok(printed.endsWith(`\nassistant > ${done.value}`), printed);
      assert.ok(printed.startsWith('\nassistant > file_search\n\n'), printed);

      // finalMessages: the message the SDK assembled from the deltas, annotations included,
      // equals what messageDone delivered and what the thread stores.
      const finals = await stream.finalMessages();
      assert.equal(finals.length, 1, show(seen));
      const assembled = textOf(finals[0]);
      assert.equal(assembled.value, done.value, show(seen));
      assert.deepEqual(
        assembled.annotations.map(({ index, ...a }) => a),
        done.annotations,
        'annotations assembled from the deltas vs the completed message' + show(seen),
      );
      assert.equal(doneMessages.length, 1);
      assert.equal(doneMessages[0].id, finals[0].id);
      const [storedMsg] = await all(client.beta.threads.messages.list(thread.id, { run_id: run.id }));
      assert.equal(storedMsg.id, finals[0].id);
      assert.deepEqual(textOf(storedMsg), done);
    });
  });
}
