// The chat page of `tandem serve` in a real headless Chromium (Debian's, through playwright-core):
// a message streams in, Stop aborts it and the server cancels, the conversation survives a
// reload, Regenerate replaces the reply, and Markdown is rendered without running any script.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { args, metric, need, requireModules, startServer, waitFor } from './server.mjs';

const CHROMIUM = '/usr/bin/chromium';
const { tandem, models } = args();
requireModules(['playwright-core']);
need(CHROMIUM, existsSync(CHROMIUM), 'install Debian\'s chromium package (.ci/install-deps does)');
const { chromium } = await import('playwright-core');

let server, context, page, profile;
const pageErrors = [];
const dialogs = [];

before(async () => {
  // A long context, so that a reply of 8000 tokens is still streaming when Stop is pressed.
  server = await startServer(tandem, ['-m', `${models}/stories260K.gguf`, '-c', '8192']);
  profile = await mkdtemp(join(tmpdir(), 'tandem-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = context.pages()[0] ?? await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('dialog', async (d) => { dialogs.push(d.message()); await d.dismiss(); });
  await page.goto(`${server.url}/`);
});

after(async () => {
  await context?.close();
  if (profile) await rm(profile, { recursive: true, force: true });
  assert.equal(await server.stop(), 0, 'SIGTERM stops the server with exit code 0');
});

const assistantText = () => page.evaluate(() =>
  document.querySelector('#messages .msg.assistant:last-child .content')?.textContent ?? '');

async function setField(id, value) {
  await page.fill(`#${id}`, value);
  await page.dispatchEvent(`#${id}`, 'change');
}

test('the page loads with the model\'s placement', async () => {
  assert.equal(await page.title(), 'Tandem chat');
  await page.waitForFunction(() => /layers: \d+ CPU/.test(document.querySelector('#model-info').textContent));
});

test('a reply streams in, and Stop cancels it on the server', async () => {
  await setField('temperature', '0');
  await setField('max_tokens', '8000');
  await page.fill('#input', 'Tell me a story.');
  await page.click('#send');
  await page.waitForSelector('#stop:not([hidden])');
  // Text appears, then more text: it streams.
  await page.waitForFunction(() =>
    (document.querySelector('#messages .msg.assistant:last-child .content')?.textContent ?? '').length > 10);
  const early = (await assistantText()).length;
  await page.waitForFunction((n) =>
    (document.querySelector('#messages .msg.assistant:last-child .content')?.textContent ?? '').length > n, early);
  assert.equal(await metric(server.url, 'tandem_sessions_busy'), 1);
  await page.click('#stop');
  await page.waitForSelector('#messages .msg.assistant.stopped');
  await page.waitForSelector('#send:not([hidden])');
  assert.match(await page.textContent('#status'), /stopped after \d+ pieces/);
  // The server cancelled the generation when the fetch was aborted.
  await waitFor(async () => (await metric(server.url, 'tandem_sessions_busy')) === 0, 'a free session');
  assert.equal(await metric(server.url, 'tandem_generations_cancelled_total'), 1);
  assert.ok(await metric(server.url, 'tandem_completion_tokens_total') < 8000);
});

test('the conversation is kept across a reload', async () => {
  const before = await assistantText();
  assert.ok(before.length > 10);
  await page.reload();
  await page.waitForSelector('#conversations li');
  assert.equal(await page.locator('#conversations li').count(), 1);
  assert.equal(await page.textContent('#conversations li .title'), 'Tell me a story.');
  assert.equal((await page.textContent('#messages .msg.user .content')).trim(), 'Tell me a story.');
  assert.equal(await assistantText(), before);
  assert.equal(await page.locator('#messages .msg.assistant.stopped').count(), 1);
  assert.equal(await page.inputValue('#max_tokens'), '8000', 'settings are kept too');
});

test('Regenerate replaces the last reply, and the status line gives the speeds', async () => {
  await setField('max_tokens', '12');
  await page.click('#regenerate');
  await page.waitForSelector('#messages .msg.assistant:not(.stopped)');
  await page.waitForSelector('#send:not([hidden])');
  assert.equal(await page.locator('#messages .msg.assistant').count(), 1);
  assert.equal(await page.locator('#messages .msg.user').count(), 1);
  const status = await page.textContent('#status');
  assert.match(status, /prompt: \d+ tokens \(\d+ cached\)/);
  assert.match(status, /generation: 12 tokens, [\d.]+ tokens\/s/);
  assert.match(status, /finish: length/);
  assert.match(status, /layers: \d+ CPU, \d+ GPU, \d+ streamed/);
});

test('Markdown in a message is rendered, and HTML in it cannot run script', async () => {
  await page.click('#new-chat');
  await setField('max_tokens', '4');
  const evil = 'Look: **bold** and `code` <img src="x" onerror="window.__pwned = 1; alert(1)">' +
               '<script>window.__pwned = 2</script> [link](javascript:window.__pwned=3)';
  await page.fill('#input', evil);
  await page.click('#send');
  await page.waitForSelector('#messages .msg.assistant');
  await page.waitForSelector('#send:not([hidden])');
  const user = page.locator('#messages .msg.user .content');
  assert.equal(await user.locator('strong').textContent(), 'bold');
  assert.equal(await user.locator('code').textContent(), 'code');
  assert.equal(await user.locator('script').count(), 0);
  const img = user.locator('img');
  assert.equal(await img.count(), 1, 'the image stays, without its handler');
  assert.equal(await img.getAttribute('onerror'), null);
  const href = await user.locator('a').getAttribute('href').catch(() => null);
  assert.ok(!href || !href.startsWith('javascript:'), `link href ${href}`);
  // Give the broken image's error event a chance to fire before concluding nothing ran.
  await page.waitForFunction(() => document.querySelector('#messages .msg.user img').complete);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.deepEqual(dialogs, []);
  assert.equal(await page.locator('#conversations li').count(), 2);
  assert.deepEqual(pageErrors, []);
});
