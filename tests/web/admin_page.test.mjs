// The admin page in a real browser: Debian's chromium driven by playwright-core, against the real
// binary. Usage: node admin_page.test.mjs PORTRELAY_BINARY [SCREENSHOT.png]
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import dgram from 'node:dgram';
import { chromium } from 'playwright-core';

const binary = process.argv[2];
const screenshot = process.argv[3];
const dir = mkdtempSync(join(tmpdir(), 'portrelay-web-'));
const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); rmSync(dir, { recursive: true, force: true }); });

// Starts the daemon on the database `name` and resolves with its API URL, from the start-up log
// line, and stop(), which sends SIGTERM and resolves once it has exited.
function startDaemon(name, extra = []) {
  const proc = spawn(binary, ['--db', join(dir, name + '.db'), '--api', '127.0.0.1:0', '--workers', '2', ...extra]);
  const exited = new Promise((done) => proc.once('exit', done));
  const stop = () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    return exited;
  };
  cleanups.push(stop);
  return new Promise((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => reject(new Error('daemon did not start: ' + log)), 60000);
    proc.stderr.on('data', (d) => {
      log += d;
      const m = log.match(/listening on (http:\/\/[^ ]+\/)/);
      if (m) { clearTimeout(timer); resolve({ url: m[1], stop }); }
    });
    proc.once('exit', () => reject(new Error('daemon exited: ' + log)));
  });
}

function echoServer() {
  // A health check's connection ends with a reset (see relay/health_checker.cpp): not an error here.
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  cleanups.push(() => new Promise((done) => server.close(done)));
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

// Sends `bytes` through the forward and waits for all of them to come back.
function traffic(port, bytes) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.end(Buffer.alloc(bytes, 'x')));
    let got = 0;
    s.on('data', (d) => { got += d.length; });
    s.on('end', () => (got === bytes ? resolve() : reject(new Error(`got ${got} of ${bytes}`))));
    s.on('error', reject);
    s.setTimeout(30000, () => reject(new Error('traffic timed out')));
  });
}

// Whether 127.0.0.1:port can be listened on now.
function bindable(port) {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

// The first of `n` consecutive free ports, drawn below the kernel's ephemeral range (as
// tests/test_support.hpp's free_ports does): no port-0 listener and no outgoing connection of a
// parallel test takes one there between this probe and the daemon's bind.
async function freePorts(n) {
  const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  const from = Math.max(1024, low - 12000);
  for (let attempt = 0; attempt < 1000; attempt++) {
    const first = from + Math.floor(Math.random() * (low - n - from));
    let free = true;
    for (let i = 0; free && i < n; i++) free = await bindable(first + i);
    if (free) return first;
  }
  throw new Error(`no ${n} consecutive free ports below the ephemeral range`);
}

async function browser() {
  const b = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  cleanups.push(() => b.close());
  return b;
}

const row = (page, text) => page.locator('#forwards tbody tr', { hasText: text });

// Resolves once the page has shown another answer of the list (it refreshes every 2 seconds).
async function nextRefresh(page) {
  const before = await page.locator('#updated').textContent();
  await page.waitForFunction((text) => document.getElementById('updated').textContent !== text, before);
}

// The first cell (the name) of each row the table shows, top to bottom.
const shownNames = (page) => page.$$eval('#forwards tbody tr:not([hidden])', (rows) => rows.map((r) => r.cells[0].textContent));

// Fails with `what` unless `promise` settles within 30 s.
function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(what + ' timed out')), 30000); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// A client connection through a forward, relaying once resolved: `echo(text)` resolves with what came
// back, `closed` once the socket has closed (a reset included), `name` is its address as the API lists it.
function liveClient(port) {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});  // the reset when the page closes it: `closed` tells
  cleanups.push(() => s.destroy());
  const closed = new Promise((done) => s.once('close', done));
  const echo = (text) => within(new Promise((resolve) => {
    let got = '';
    const take = (d) => {
      got += d;
      if (got.length >= text.length) { s.off('data', take); resolve(got); }
    };
    s.on('data', take);
    s.write(text);
  }), 'echo');
  return within(new Promise((resolve) => s.once('connect', resolve)), 'connect')
    .then(() => echo('hello'))
    .then(() => ({ s, closed, echo, name: `127.0.0.1:${s.localPort}` }));
}

// A request to the API from the test itself, not through the page.
async function call(url, method, path, body) {
  const res = await fetch(new URL(path, url), {
    method, headers: body ? { 'Content-Type': 'application/json' } : {}, body: body && JSON.stringify(body),
  });
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${await res.clone().text()}`);
  return res.status === 204 ? null : res.json();
}

// Holds every request for the forward list until release() is called.
function holdList(page) {
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  const done = page.route('**/api/v1/forwards', async (route) => { await gate; await route.continue().catch(() => {}); });
  return { done, release };
}

test('create, watch, reject, edit, toggle and delete through the page', { timeout: 300000 }, async () => {
  const { url } = await startDaemon('main');
  const target = await echoServer();
  const page = await (await browser()).newPage();
  page.setDefaultTimeout(30000);
  const response = await page.goto(url);
  assert.equal(response.headers()['x-frame-options'], 'DENY');
  assert.match(response.headers()['content-security-policy'], /script-src 'self'/);
  await page.getByText('No forwards yet').waitFor();

  // A value the API refuses: its message appears beside the field, and nothing is created.
  await page.getByLabel('Name').fill('web');
  await page.getByLabel('Listen address').fill('127.0.0.1');
  await page.getByLabel('Listen port (0 = any free port)').fill('http');
  await page.getByLabel('Target 1 host').fill('127.0.0.1');
  await page.getByLabel('Target 1 port').fill(String(target));
  await page.getByRole('button', { name: 'Create forward' }).click();
  await page.locator('#err-listen_port').getByText('listen_port must be an integer').waitFor();
  assert.equal(await page.locator('#f-listen_port').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.locator('#forwards tbody tr').count(), 0);

  // Fixed, it is created and listed.
  await page.getByLabel('Listen port (0 = any free port)').fill('0');
  await page.getByRole('button', { name: 'Create forward' }).click();
  const r = row(page, 'web');
  await r.waitFor();
  assert.equal(await page.locator('#err-listen_port').isHidden(), true);
  const listen = await r.locator('td').nth(2).textContent();
  const port = Number(listen.split(':').pop());
  assert.ok(port > 0);
  await r.locator('.state-active').waitFor();
  await page.getByRole('status').getByText('1 forward: 1 active, 0 in error, 0 disabled', { exact: true }).waitFor();

  // Traffic moves the counters on the next refresh.
  await traffic(port, 100000);
  await page.waitForFunction(() => {
    const cells = document.querySelectorAll('#forwards tbody tr td');
    return cells[7]?.textContent === '1' && cells[8]?.textContent === '97.7 KiB';
  }, null, { timeout: 30000 });

  // Edit in the form.
  await r.getByRole('button', { name: 'Edit web' }).click();
  await page.getByLabel('Name').fill('web-renamed');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await row(page, 'web-renamed').waitFor();

  // Off and on again.
  const toggle = page.getByRole('checkbox', { name: 'Enabled: web-renamed' });
  await toggle.uncheck();
  await row(page, 'web-renamed').locator('.state-disabled').waitFor();
  await page.getByRole('status').getByText('1 forward: 0 active, 0 in error, 1 disabled', { exact: true }).waitFor();
  await toggle.check();
  await row(page, 'web-renamed').locator('.state-active').waitFor();

  // Delete, after confirming.
  page.once('dialog', (d) => { assert.match(d.message(), /Delete forward "web-renamed"/); d.accept(); });
  await row(page, 'web-renamed').getByRole('button', { name: 'Delete web-renamed' }).click();
  await page.getByText('No forwards yet').waitFor();
});

test('UDP settings appear only for UDP, and the token prompt leads to the list', { timeout: 300000 }, async () => {
  writeFileSync(join(dir, 'token'), 's3cret\n');
  const { url } = await startDaemon('token', ['--token-file', join(dir, 'token')]);
  const page = await (await browser()).newPage();
  page.setDefaultTimeout(30000);
  await page.goto(url);
  const dialog = page.getByRole('dialog', { name: 'API token' });
  await dialog.waitFor();
  await page.getByLabel('Token', { exact: true }).fill('wrong');
  await page.getByRole('button', { name: 'Use token' }).click();
  await dialog.getByText('That token was refused').waitFor();
  await page.getByLabel('Token', { exact: true }).fill('s3cret');
  await page.getByRole('button', { name: 'Use token' }).click();
  await page.getByText('No forwards yet').waitFor();
  assert.equal(await dialog.isHidden(), true);
  assert.equal(await page.evaluate(() => document.cookie), '');

  assert.equal(await page.getByLabel('UDP max sessions').isHidden(), true);
  await page.getByLabel('Protocol').selectOption('udp');
  await page.getByLabel('UDP max sessions').fill('0');
  await page.getByLabel('Listen address').fill('127.0.0.1');
  await page.getByLabel('Listen port (0 = any free port)').fill('0');
  await page.getByLabel('Target 1 host').fill('127.0.0.1');
  await page.getByLabel('Target 1 port').fill('53');
  await page.getByRole('button', { name: 'Create forward' }).click();
  await page.locator('#err-udp_max_sessions').getByText('udp_max_sessions must be from 1').waitFor();
  await page.getByLabel('UDP max sessions').fill('100');
  await page.getByRole('button', { name: 'Create forward' }).click();
  await page.locator('#forwards tbody tr', { hasText: 'UDP' }).waitFor();

  // A phone-sized window: the page itself never scrolls sideways (only the table inside it may).
  await page.setViewportSize({ width: 375, height: 700 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the window`);
  // And the form works from the keyboard alone: Tab reaches the fields in order.
  await page.getByLabel('Name').focus();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'f-protocol');
});

test('loading, failed to load, out of date, and back', { timeout: 300000 }, async () => {
  const { url } = await startDaemon('states');
  const page = await (await browser()).newPage();
  page.setDefaultTimeout(30000);

  // Before the first answer: a loading line, neither the empty-state text nor an empty table.
  const held = holdList(page);
  await held.done;
  const asked = page.waitForRequest('**/api/v1/forwards');
  await page.goto(url);
  await asked;
  assert.equal(await page.getByText('Loading forwards…').isVisible(), true);
  assert.equal(await page.getByText('No forwards yet').isVisible(), false);
  assert.equal(await page.locator('#forwards').isVisible(), false);
  held.release();
  await page.getByText('No forwards yet').waitFor();
  assert.equal(await page.getByText('Loading forwards…').isVisible(), false);
  await page.unroute('**/api/v1/forwards');

  // The list fails before any answer: the reason, then the list once the API answers again.
  await page.route('**/api/v1/forwards', (route) => route.fulfill({
    status: 503, contentType: 'application/json',
    body: JSON.stringify({ error: { code: 'storage_error', message: 'the store is busy' } }),
  }));
  await page.reload();
  const failed = page.getByRole('alert').filter({ hasText: 'Cannot load the forwards' });
  await failed.getByText('the API answered 503 (the store is busy)').waitFor();
  assert.equal(await page.getByText('Loading forwards…').isVisible(), false);
  assert.equal(await page.getByText('No forwards yet').isVisible(), false);
  await page.unroute('**/api/v1/forwards');
  await page.getByText('No forwards yet').waitFor();
  await failed.waitFor({ state: 'hidden' });

  // Rows already shown stay when the daemon cannot be reached, marked as out of date.
  await call(url, 'POST', '/api/v1/forwards',
    { name: 'kept', protocol: 'tcp', listen_host: '127.0.0.1', listen_port: 0, target_host: '127.0.0.1', target_port: 9 });
  await row(page, 'kept').waitFor();
  await page.route('**/api/v1/forwards', (route) => route.abort('connectionrefused'));
  const stale = page.getByRole('alert').filter({ hasText: 'Cannot update the forwards: the daemon is not reachable' });
  await stale.waitFor();
  assert.equal(await row(page, 'kept').isVisible(), true);
  assert.equal(await page.locator('#forwards.stale').count(), 1);
  await page.locator('header').getByText('not updated since').waitFor();
  await page.unroute('**/api/v1/forwards');
  await stale.waitFor({ state: 'hidden' });
  assert.equal(await page.locator('#forwards.stale').count(), 0);
  await page.locator('header').getByText(/^updated /).waitFor();
});

test('a forward in error: one line of reason, the rest on demand, and Retry', { timeout: 300000 }, async () => {
  // Stored while its port is free; the port is taken before the next start, so it comes up in error.
  const target = await echoServer();
  const first = await startDaemon('error');
  const spec = (name, enabled, port = 0) =>
    ({ name, protocol: 'tcp', listen_host: '127.0.0.1', listen_port: port, target_host: '127.0.0.1', target_port: target, enabled });
  const port = (await call(first.url, 'POST', '/api/v1/forwards', spec('legacy-http', true))).listen_port;
  const web = (await call(first.url, 'POST', '/api/v1/forwards', spec('web', true))).listen_port;
  await call(first.url, 'POST', '/api/v1/forwards', spec('ssh-jump', false, 2222));  // disabled: never bound
  await first.stop();
  const squatter = net.createServer();
  cleanups.push(() => new Promise((done) => (squatter.listening ? squatter.close(done) : done())));
  await new Promise((resolve, reject) => { squatter.once('error', reject); squatter.listen(port, '127.0.0.1', resolve); });
  const { url } = await startDaemon('error');

  const page = await (await browser()).newPage();
  page.setDefaultTimeout(30000);
  await page.goto(url);
  const r = row(page, 'legacy-http');
  await r.locator('.state-error').waitFor();
  await page.getByRole('status').getByText('3 forwards: 1 active, 1 in error, 1 disabled', { exact: true }).waitFor();

  if (screenshot) {
    // For the README: the states side by side, with traffic through one forward over a few
    // refreshes (so its chart has some history), and that forward's details with a live connection.
    await page.setViewportSize({ width: 1920, height: 760 });
    const client = await liveClient(web);
    for (const bytes of [1000000, 4000000, 2000000]) {
      await traffic(web, bytes);
      await nextRefresh(page);
    }
    await page.getByRole('button', { name: 'Details of web' }).click();
    await page.locator('table.conns tbody tr', { hasText: client.name }).waitFor();
    await page.screenshot({ path: screenshot, fullPage: true });
  }

  // The reason takes one line, cut with an ellipsis; opened from the keyboard it shows in full.
  const reason = r.locator('details.reason > summary');
  const layout = () => reason.evaluate((el) => ({
    lines: Math.round(el.getBoundingClientRect().height / parseFloat(getComputedStyle(el).lineHeight)),
    cut: el.scrollWidth > el.clientWidth,
  }));
  assert.match(await reason.textContent(), new RegExp(`127\\.0\\.0\\.1:${port}.*Address already in use`));
  assert.deepEqual(await layout(), { lines: 1, cut: true });
  await reason.focus();
  const updated = await page.locator('#updated').textContent();
  await page.waitForFunction((text) => document.getElementById('updated').textContent !== text, updated);
  await page.keyboard.press('Enter');  // after a refresh, so it also shows that the focus survived it
  await r.locator('details.reason[open]').waitFor();
  const opened = await layout();
  assert.ok(opened.lines > 1 && !opened.cut, JSON.stringify(opened));
  await page.keyboard.press('Enter');
  await r.locator('details.reason:not([open])').waitFor();

  // Its switch shows that it is enabled, described by the state beside it, which says error.
  const toggle = page.getByRole('checkbox', { name: 'Enabled: legacy-http' });
  assert.equal(await toggle.isChecked(), true);
  const describedBy = await toggle.getAttribute('aria-describedby');
  assert.equal(await page.locator('#' + describedBy).textContent(), 'error');
  assert.equal(await row(page, 'web').getByRole('button', { name: 'Retry web' }).isHidden(), true);

  // Retry while the port is still taken: still error, with the fresh reason said out loud.
  await r.getByRole('button', { name: 'Retry legacy-http' }).click();
  await page.locator('#action-error').getByText('Retry: "legacy-http" is still not listening: listen address').waitFor();
  assert.equal(await r.locator('.state-error').count(), 1);

  // Retry once the port is free: active, and it carries traffic.
  await new Promise((done) => squatter.close(done));
  await r.getByRole('button', { name: 'Retry legacy-http' }).click();
  await r.locator('.state-active').waitFor();
  assert.equal(await page.locator('#action-error').isHidden(), true);
  assert.equal(await r.getByRole('button', { name: 'Retry legacy-http' }).isHidden(), true);
  assert.equal(await toggle.evaluate((el) => el === document.activeElement), true, 'focus moves to the switch');
  assert.equal(await reason.isHidden(), true);
  await page.getByRole('status').getByText('3 forwards: 2 active, 0 in error, 1 disabled', { exact: true }).waitFor();
  await traffic(port, 1000);
});

test('a pool in the form: targets, backup, balance and health check; edit a weight, remove a target', { timeout: 300000 }, async () => {
  const { url } = await startDaemon('pool');
  const [a, b] = [await echoServer(), await echoServer()];
  const page = await (await browser()).newPage();
  page.setDefaultTimeout(30000);
  await page.goto(url);
  await page.getByText('No forwards yet').waitFor();

  await page.getByLabel('Name').fill('pool');
  await page.getByLabel('Listen address').fill('127.0.0.1');
  await page.getByLabel('Listen port (0 = any free port)').fill('0');
  assert.equal(await page.getByRole('button', { name: 'Remove target 1' }).isDisabled(), true);
  await page.getByLabel('Target 1 host').fill('127.0.0.1');
  await page.getByLabel('Target 1 port').fill(String(a));
  await page.getByRole('button', { name: 'Add target' }).click();
  await page.getByLabel('Target 2 host').fill('127.0.0.1');
  await page.getByLabel('Target 2 port').fill(String(a));  // the same as target 1: refused
  await page.getByLabel('Target 2 weight').fill('3');
  await page.getByRole('button', { name: 'Add target' }).click();
  await page.getByLabel('Target 3 host').fill('::1');
  await page.getByLabel('Target 3 port').fill('9');
  await page.getByLabel('Target 3 backup').check();
  await page.getByLabel('Balance').selectOption('least_conn');
  assert.equal(await page.getByLabel('Interval (s)').isHidden(), true);
  await page.getByLabel('Active health check').check();
  await page.getByLabel('Interval (s)').fill('1');
  await page.getByLabel('Timeout (s)').fill('1');
  await page.getByLabel('Rise').fill('1');
  await page.getByLabel('Fall').fill('1');

  // The API's message appears beside the pool, and nothing is created.
  await page.getByRole('button', { name: 'Create forward' }).click();
  await page.locator('#err-targets').getByText('targets[1] repeats targets[0] (127.0.0.1:' + a + ')').waitFor();
  assert.equal(await page.locator('#f-targets').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.locator('#forwards tbody tr').count(), 0);

  await page.getByLabel('Target 2 port').fill(String(b));
  const posted = page.waitForRequest((req) => req.method() === 'POST');
  await page.getByRole('button', { name: 'Create forward' }).click();
  const sent = (await posted).postDataJSON();
  assert.equal('target_host' in sent || 'target_port' in sent, false, 'the page sends targets, never the shorthand');
  const r = row(page, 'pool');
  await r.waitFor();
  const [f] = await call(url, 'GET', '/api/v1/forwards');
  assert.deepEqual(f.targets, [
    { host: '127.0.0.1', port: a, weight: 1, backup: false },
    { host: '127.0.0.1', port: b, weight: 3, backup: false },
    { host: '::1', port: 9, weight: 1, backup: true },
  ]);
  assert.equal(f.balance, 'least_conn');
  assert.deepEqual(f.health_check, { interval_s: 1, timeout_s: 1, rise: 1, fall: 1, port: null });
  assert.equal(f.target_host, null);

  // Each target on its own line, with a health mark in words and a symbol, and its connections.
  const lines = r.locator('ul.targets > li');
  await page.waitForFunction(() => document.querySelectorAll('#forwards ul.targets > li').length === 3);
  assert.match(await lines.nth(0).textContent(), new RegExp(`^(\u25CF up|\u2716 down|\u25CB unchecked) 127\\.0\\.0\\.1:${a} \u00B7 0 active$`));
  assert.match(await lines.nth(1).textContent(), new RegExp(`127\\.0\\.0\\.1:${b} \u00B7 weight 3 \u00B7 0 active$`));
  assert.match(await lines.nth(2).textContent(), /\[::1\]:9 \u00B7 backup \u00B7 0 active$/);
  for (let i = 0; i < 3; i++) {
    const mark = lines.nth(i).locator('.health');
    const word = (await mark.textContent()).split(' ')[1];
    assert.equal(await mark.getAttribute('class'), `health health-${word}`);
  }

  // The three states as the API reports them (here put in the answer, as the engine would):
  // each its own word, symbol and colour.
  await page.route('**/api/v1/forwards', async (route) => {
    const res = await route.fetch();
    const list = await res.json();
    const states = ['up', 'down', 'unchecked'];
    list[0].stats.targets.forEach((t, i) => { t.health = states[i]; t.connections_active = i + 4; });
    list[0].stats.targets[1].last_error = 'connect: Connection refused';
    await route.fulfill({ response: res, json: list });
  });
  await r.locator('.health-down').waitFor();
  assert.equal(await lines.nth(0).locator('.health').textContent(), '\u25CF up');
  assert.equal(await lines.nth(1).locator('.health').textContent(), '\u2716 down');
  assert.equal(await lines.nth(2).locator('.health').textContent(), '\u25CB unchecked');
  assert.match(await lines.nth(1).getAttribute('title'), /^down since .*: connect: Connection refused$/);
  assert.match(await lines.nth(2).textContent(), /6 active$/);
  assert.match(await lines.nth(1).textContent(), /5 active \u00B7 connect: Connection refused$/);
  assert.equal(await lines.nth(1).locator('[aria-hidden=true]').textContent(), '\u2716 ');
  const colours = await lines.evaluateAll((items) => items.map((li) => getComputedStyle(li.querySelector('.health')).color));
  assert.equal(new Set(colours).size, 3, colours.join(' '));
  await page.unroute('**/api/v1/forwards');

  // Edit: the form holds the pool; a bad health check is refused with the API's words.
  await r.getByRole('button', { name: 'Edit pool' }).click();
  assert.equal(await page.getByLabel('Target 2 weight').inputValue(), '3');
  assert.equal(await page.getByLabel('Target 3 backup').isChecked(), true);
  assert.equal(await page.getByLabel('Balance').inputValue(), 'least_conn');
  assert.equal(await page.getByLabel('Active health check').isChecked(), true);
  await page.getByLabel('Timeout (s)').fill('2');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.locator('#err-health_check').getByText('health_check.timeout_s must be at most health_check.interval_s').waitFor();
  await page.getByLabel('Timeout (s)').fill('1');
  await page.getByLabel('Target 2 weight').fill('5');
  await page.getByRole('button', { name: 'Remove target 3' }).click();
  assert.equal(await page.getByLabel('Target 3 host').count(), 0);
  const patched = page.waitForRequest((req) => req.method() === 'PATCH');
  await page.getByRole('button', { name: 'Save changes' }).click();
  const change = (await patched).postDataJSON();
  assert.equal('target_host' in change, false);
  await page.getByRole('heading', { name: 'New forward' }).waitFor();
  const [g] = await call(url, 'GET', '/api/v1/forwards');
  assert.deepEqual(g.targets, [
    { host: '127.0.0.1', port: a, weight: 1, backup: false },
    { host: '127.0.0.1', port: b, weight: 5, backup: false },
  ]);
  await page.waitForFunction(() => document.querySelectorAll('#forwards ul.targets > li').length === 2);
  assert.match(await lines.nth(1).textContent(), /weight 5/);
  // The forward still carries traffic.
  await traffic(g.listen_port, 1000);
});

test('who may connect and how much: lists and limits in the form, their 400s beside them, and the row', { timeout: 300000 }, async () => {
  const { url } = await startDaemon('policy');
  const target = await echoServer();
  const page = await (await browser()).newPage();
  page.setDefaultTimeout(30000);
  await page.goto(url);
  await page.getByText('No forwards yet').waitFor();

  await page.getByLabel('Name').fill('guarded');
  await page.getByLabel('Listen address').fill('127.0.0.1');
  await page.getByLabel('Listen port (0 = any free port)').fill('0');
  await page.getByLabel('Target 1 host').fill('127.0.0.1');
  await page.getByLabel('Target 1 port').fill(String(target));
  // A blank line is not an entry: the API's allow[1] is the third line, and the page says so.
  await page.getByLabel('Allow (empty = everyone)').fill('127.0.0.0/8\n\n  10.1.2.3/8  \n');
  await page.getByRole('button', { name: 'Create forward' }).click();
  await page.locator('#err-allow')
    .getByText("allow[1] '10.1.2.3/8' has host bits set: the prefix is 10.0.0.0/8 (line 3)", { exact: true }).waitFor();
  assert.equal(await page.locator('#f-allow').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.locator('#f-allow').evaluate((el) => el === document.activeElement), true);
  assert.equal(await page.locator('#forwards tbody tr').count(), 0);

  await page.getByLabel('Allow (empty = everyone)').fill('127.0.0.0/8\n\n10.0.0.0/8\n');
  await page.getByLabel('Deny').fill('127.0.0.9');
  await page.getByLabel('Max connections (0 = no limit)').fill('1000001');
  await page.getByRole('button', { name: 'Create forward' }).click();
  await page.locator('#err-max_connections').getByText('max_connections must be from 0 to 1000000').waitFor();
  assert.equal(await page.locator('#err-allow').isHidden(), true);
  await page.getByLabel('Max connections (0 = no limit)').fill('10');
  await page.getByLabel('Max per client address (0 = no limit)').fill('2');
  assert.equal(await page.getByLabel(/^Up, client to target/).isHidden(), true);
  await page.getByLabel(/^Limit bandwidth/).check();
  await page.getByLabel(/^Up, client to target/).fill('1048576');
  await page.getByRole('button', { name: 'Create forward' }).click();
  const r = row(page, 'guarded');
  await r.waitFor();
  const [f] = await call(url, 'GET', '/api/v1/forwards');
  assert.deepEqual(f.allow, ['127.0.0.0/8', '10.0.0.0/8']);
  assert.deepEqual(f.deny, ['127.0.0.9/32']);
  assert.equal(f.max_connections, 10);
  assert.equal(f.max_connections_per_source, 2);
  assert.deepEqual(f.bandwidth_limit, { up_bytes_per_s: 1048576, down_bytes_per_s: null, burst_bytes: null });

  // The row: the policy one line each, and the refused counters with the other stats.
  const policy = r.locator('ul.policy > li');
  await page.waitForFunction(() => document.querySelectorAll('#forwards ul.policy > li').length === 4);
  assert.deepEqual(await policy.allTextContents(), ['allow 127.0.0.0/8, 10.0.0.0/8', 'deny 127.0.0.9/32',
    'at most 10 connections \u00B7 2 per client address', 'up 1.0 MiB/s']);
  const refused = r.locator('td').nth(11);
  assert.equal(await refused.textContent(), '0 / 0');
  // Counters as the engine reports them (put in the answer here): acl first, then limit.
  await page.route('**/api/v1/forwards', async (route) => {
    const res = await route.fetch();
    const list = await res.json();
    Object.assign(list[0].stats, { refused_acl: 7, refused_limit: 3 });
    await route.fulfill({ response: res, json: list });
  });
  await page.waitForFunction(() => document.querySelectorAll('#forwards tbody tr td')[11]?.textContent === '7 / 3');
  assert.match(await refused.getAttribute('title'), /lists: 7, by a connection limit: 3$/);
  await page.unroute('**/api/v1/forwards');

  // Edit: the form holds the lists one entry per line and the limit; a bad burst is placed at the limit.
  await r.getByRole('button', { name: 'Edit guarded' }).click();
  assert.equal(await page.getByLabel('Allow (empty = everyone)').inputValue(), '127.0.0.0/8\n10.0.0.0/8');
  assert.equal(await page.getByLabel('Deny').inputValue(), '127.0.0.9/32');
  assert.equal(await page.getByLabel('Max per client address (0 = no limit)').inputValue(), '2');
  assert.equal(await page.getByLabel(/^Limit bandwidth/).isChecked(), true);
  assert.equal(await page.getByLabel(/^Up, client to target/).inputValue(), '1048576');
  assert.equal(await page.getByLabel(/^Down, target to client/).inputValue(), '');
  await page.getByLabel(/^Burst/).fill('1000');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.locator('#err-bandwidth_limit').getByText('bandwidth_limit.burst_bytes must be from 65536').waitFor();
  assert.equal(await page.locator('#f-bandwidth_limit').getAttribute('aria-invalid'), 'true');
  await page.getByLabel(/^Burst/).fill('65536');
  await page.getByLabel(/^Down, target to client/).fill('2048');
  await page.getByLabel('Allow (empty = everyone)').fill('');
  await page.getByLabel('Deny').fill('192.0.2.0/24\n2001:DB8::/32\n\n');
  await page.getByLabel('Max connections (0 = no limit)').fill('0');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.getByRole('heading', { name: 'New forward' }).waitFor();
  let [g] = await call(url, 'GET', '/api/v1/forwards');
  assert.deepEqual(g.allow, []);
  assert.deepEqual(g.deny, ['192.0.2.0/24', '2001:db8::/32']);
  assert.equal(g.max_connections, 0);
  assert.deepEqual(g.bandwidth_limit, { up_bytes_per_s: 1048576, down_bytes_per_s: 2048, burst_bytes: 65536 });
  await page.waitForFunction(() => document.querySelector('#forwards ul.policy')?.textContent.includes('down 2.0 KiB/s'));
  assert.deepEqual(await policy.allTextContents(), ['deny 192.0.2.0/24, 2001:db8::/32', '2 per client address',
    'up 1.0 MiB/s \u00B7 down 2.0 KiB/s \u00B7 burst 64.0 KiB']);

  // No limit again, by the checkbox; the other values stay. The new form starts with no policy.
  assert.equal(await page.getByLabel(/^Limit bandwidth/).isChecked(), false);
  await r.getByRole('button', { name: 'Edit guarded' }).click();
  await page.getByLabel(/^Limit bandwidth/).uncheck();
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.getByRole('heading', { name: 'New forward' }).waitFor();
  [g] = await call(url, 'GET', '/api/v1/forwards');
  assert.equal(g.bandwidth_limit, null);
  assert.deepEqual(g.deny, ['192.0.2.0/24', '2001:db8::/32']);
  assert.equal(g.max_connections_per_source, 2);
  assert.equal(await page.getByLabel('Deny').inputValue(), '');
  assert.equal(await page.getByLabel('Max per client address (0 = no limit)').inputValue(), '0');
  // 127.0.0.1 is admitted, and under every limit: the forward carries traffic.
  await traffic(g.listen_port, 1000);
});

test('a port range, PROXY headers and a source address in the form, their 400s beside them, and the row', { timeout: 300000 }, async () => {
  const { url } = await startDaemon('edges');
  // The target notes the address each connection came from.
  const peers = [];
  const server = net.createServer((s) => { peers.push(s.remoteAddress); s.on('error', () => {}); s.pipe(s); });
  cleanups.push(() => new Promise((done) => server.close(done)));
  const target = await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
  const page = await (await browser()).newPage();
  page.setDefaultTimeout(30000);
  await page.goto(url);
  await page.getByText('No forwards yet').waitFor();

  // UDP: no "clients send a header" option, and v1 is refused beside its field.
  await page.getByLabel('Protocol').selectOption('udp');
  assert.equal(await page.getByLabel(/^Clients send a PROXY header first/).isHidden(), true);
  await page.getByLabel('Listen address').fill('127.0.0.1');
  await page.getByLabel('Listen port (0 = any free port)').fill('0');
  await page.getByLabel('Target 1 host').fill('127.0.0.1');
  await page.getByLabel('Target 1 port').fill(String(target));
  await page.getByLabel('Send a PROXY header to targets').selectOption('v1');
  await page.getByRole('button', { name: 'Create forward' }).click();
  await page.locator('#err-proxy_protocol').getByText(/on a udp forward must be "v2"/).waitFor();
  assert.equal(await page.locator('#f-proxy_protocol').getAttribute('aria-invalid'), 'true');

  // TCP: a range needs an explicit port; an address this host lacks is refused beside its field.
  await page.getByLabel('Protocol').selectOption('tcp');
  await page.getByLabel(/^Clients send a PROXY header first/).waitFor();
  await page.getByLabel('Name').fill('edges');
  await page.getByLabel('Listen port range end (empty = one port)').fill('2');
  await page.getByRole('button', { name: 'Create forward' }).click();
  await page.locator('#err-listen_port_end, #err-listen_port').getByText(/range/).first().waitFor();
  assert.equal(await page.locator('#forwards tbody tr').count(), 0);
  const free = await freePorts(2);
  await page.getByLabel('Listen port (0 = any free port)').fill(String(free));
  await page.getByLabel('Listen port range end (empty = one port)').fill(String(free + 1));
  await page.getByLabel('Source address (empty = the kernel chooses)').fill('192.0.2.1');
  await page.getByRole('button', { name: 'Create forward' }).click();
  await page.locator('#err-source_address').getByText(/192\.0\.2\.1/).waitFor();
  assert.equal(await page.locator('#f-source_address').getAttribute('aria-invalid'), 'true');
  await page.getByLabel('Source address (empty = the kernel chooses)').fill('127.0.0.2');
  await page.getByLabel('Send a PROXY header to targets').selectOption('v2');
  await page.getByLabel(/^Clients send a PROXY header first/).check();
  await page.getByRole('button', { name: 'Create forward' }).click();
  const r = row(page, 'edges');
  await r.waitFor();
  const [f] = await call(url, 'GET', '/api/v1/forwards');
  assert.equal(f.listen_port_end, free + 1);
  assert.equal(f.source_address, '127.0.0.2');
  assert.equal(f.proxy_protocol, 'v2');
  assert.equal(f.accept_proxy_protocol, true);

  // The row: the range in Listen, one line each in Policy, and the PROXY errors after the refusals.
  assert.equal(await r.locator('td').nth(2).textContent(), `127.0.0.1:${free}-${free + 1}`);
  assert.deepEqual(await r.locator('ul.policy > li').allTextContents(),
    ['clients send a PROXY header', 'PROXY v2 to targets', 'from 127.0.0.2']);
  assert.equal(await r.locator('td').nth(11).textContent(), '0 / 0 / 0');
  assert.match(await r.locator('td').nth(11).getAttribute('title'), /for a bad PROXY header: 0$/);

  // Edit: the form holds the values; back to one port, no headers. The source address stays.
  await r.getByRole('button', { name: 'Edit edges' }).click();
  assert.equal(await page.getByLabel('Listen port range end (empty = one port)').inputValue(), String(free + 1));
  assert.equal(await page.getByLabel('Source address (empty = the kernel chooses)').inputValue(), '127.0.0.2');
  assert.equal(await page.getByLabel('Send a PROXY header to targets').inputValue(), 'v2');
  assert.equal(await page.getByLabel(/^Clients send a PROXY header first/).isChecked(), true);
  await page.getByLabel('Listen port range end (empty = one port)').fill('');
  await page.getByLabel('Send a PROXY header to targets').selectOption('');
  await page.getByLabel(/^Clients send a PROXY header first/).uncheck();
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.getByRole('heading', { name: 'New forward' }).waitFor();
  const [g] = await call(url, 'GET', '/api/v1/forwards');
  assert.equal(g.listen_port_end, null);
  assert.equal(g.proxy_protocol, null);
  assert.equal(g.accept_proxy_protocol, false);
  assert.equal(g.source_address, '127.0.0.2');
  await page.waitForFunction((port) => [...document.querySelectorAll('#forwards tbody td')]
    .some((td) => td.textContent === `127.0.0.1:${port}`), free);
  // The new form starts empty again, and the forward leaves from 127.0.0.2.
  assert.equal(await page.getByLabel('Source address (empty = the kernel chooses)').inputValue(), '');
  await traffic(g.listen_port, 1000);
  assert.deepEqual(peers, ['127.0.0.2']);
});

test('filter and sort the table, and each forward\'s throughput chart', { timeout: 300000 }, async () => {
  const { url } = await startDaemon('table');
  const [target, other] = [await echoServer(), await echoServer()];
  const spec = (name, port = target) =>
    ({ name, protocol: 'tcp', listen_host: '127.0.0.1', listen_port: 0, targets: [{ host: '127.0.0.1', port }] });
  const ports = {};
  for (const name of ['web10', 'alpha', 'web2', 'beta']) {
    ports[name] = (await call(url, 'POST', '/api/v1/forwards', spec(name, name === 'beta' ? other : target))).listen_port;
  }
  await traffic(ports.web10, 20000);
  await traffic(ports.beta, 300000);
  await traffic(ports.web2, 2000000);
  const page = await (await browser()).newPage();
  page.setDefaultTimeout(30000);
  await page.goto(url);
  await page.waitForFunction(() => document.querySelectorAll('#forwards tbody tr').length === 4);
  assert.deepEqual(await shownNames(page), ['web10', 'alpha', 'web2', 'beta']);  // the API's order, by id

  // By name: natural order, then turned around; it holds across refreshes.
  const header = (name) => page.getByRole('columnheader', { name, exact: true });
  await header('Name').getByRole('button').click();
  assert.equal(await header('Name').getAttribute('aria-sort'), 'ascending');
  assert.deepEqual(await shownNames(page), ['alpha', 'beta', 'web2', 'web10']);
  await header('Name').getByRole('button').click();
  assert.equal(await header('Name').getAttribute('aria-sort'), 'descending');
  assert.deepEqual(await shownNames(page), ['web10', 'web2', 'beta', 'alpha']);
  await nextRefresh(page);
  assert.deepEqual(await shownNames(page), ['web10', 'web2', 'beta', 'alpha']);
  // By bytes up: as numbers (as text "1.9 MiB" would come before "19.5 KiB").
  await page.waitForFunction(() => [...document.querySelectorAll('#forwards tbody tr')]
    .some((tr) => tr.cells[0].textContent === 'web2' && tr.cells[8].textContent === '1.9 MiB'));
  await header('Up').getByRole('button').click();
  assert.equal(await header('Name').getAttribute('aria-sort'), null);
  assert.equal(await header('Up').getAttribute('aria-sort'), 'ascending');
  assert.deepEqual(await shownNames(page), ['alpha', 'web10', 'beta', 'web2']);
  await header('Up').getByRole('button').click();
  assert.deepEqual(await shownNames(page), ['web2', 'beta', 'web10', 'alpha']);

  // The filter: any piece of the name, listen port, target or state, in any case; it holds across
  // refreshes, and the sort still applies.
  const filter = page.getByLabel('Filter');
  await filter.fill('WEB');
  assert.deepEqual(await shownNames(page), ['web2', 'web10']);
  await page.getByRole('status').getByText('2 of 4 shown', { exact: true }).waitFor();
  await filter.fill(String(ports.alpha));
  assert.deepEqual(await shownNames(page), ['alpha']);
  await filter.fill(`:${other}`);
  assert.deepEqual(await shownNames(page), ['beta']);
  await call(url, 'PATCH', `/api/v1/forwards/${(await call(url, 'GET', '/api/v1/forwards'))[3].id}`, { enabled: false });
  await filter.fill('Disabled');
  await page.waitForFunction(() => document.querySelectorAll('#forwards tbody tr:not([hidden])').length === 1);
  assert.deepEqual(await shownNames(page), ['beta']);
  await nextRefresh(page);
  assert.deepEqual(await shownNames(page), ['beta']);
  assert.equal(await filter.inputValue(), 'Disabled');
  await filter.fill('zzz');
  await page.getByText('No forward matches \u201Czzz\u201D.').waitFor();
  assert.deepEqual(await shownNames(page), []);
  await filter.fill('');
  assert.deepEqual(await shownNames(page), ['web2', 'beta', 'web10', 'alpha']);
  assert.equal(await page.getByText(/^No forward matches/).isVisible(), false);
  assert.equal(await page.locator('#filter-count').textContent(), '');

  // The chart: up and down drawn from the page's own readings; while data flows, a non-zero rate.
  const r = row(page, 'alpha');
  const chart = r.locator('td').nth(10).locator('svg');
  await chart.waitFor();
  assert.equal(await chart.locator('polyline').count(), 2);
  const flow = net.connect(ports.alpha, '127.0.0.1');
  flow.on('error', () => {});
  flow.resume();
  const writer = setInterval(() => flow.write(Buffer.alloc(65536, 'x')), 100);
  cleanups.push(() => { clearInterval(writer); flow.destroy(); });
  const legend = r.locator('.legend .up');
  await page.waitForFunction((el) => /^up [1-9]/.test(el.textContent), await legend.elementHandle());
  assert.match(await r.locator('.legend .down').textContent(), /^down \d/);
  assert.match(await chart.getAttribute('aria-label'),
    /^Throughput of alpha over the last \d+ (seconds|minutes): now up [1-9][\d.]* [KM]?i?B\/s, down /);
  assert.equal(await chart.locator('title').textContent(), await chart.getAttribute('aria-label'));
  // Its line rises above the floor of the chart.
  const ys = (await chart.locator('polyline.up').getAttribute('points')).split(' ').map((p) => Number(p.split(',')[1]));
  assert.ok(Math.min(...ys) < 27, ys.join(' '));
  clearInterval(writer);

  // A counter that goes back (the forward recreated, the daemon restarted) starts the series again:
  // one reading, no chart, until the next.
  await page.route('**/api/v1/forwards', async (route) => {
    const res = await route.fetch();
    const list = await res.json();
    for (const f of list) f.stats.bytes_up = 0;
    await route.fulfill({ response: res, json: list });
  });
  await r.locator('td').nth(10).getByText('–', { exact: true }).waitFor();
  assert.equal(await chart.isHidden(), true);
  await page.unroute('**/api/v1/forwards');
  await chart.waitFor();
});

test('a pool\'s targets with their health in the forward\'s details', { timeout: 300000 }, async () => {
  const { url } = await startDaemon('health');
  const up = await echoServer();
  const down = await freePorts(1);  // nobody listens there: the health check sees it down
  await call(url, 'POST', '/api/v1/forwards', {
    name: 'pool', protocol: 'tcp', listen_host: '127.0.0.1', listen_port: 0,
    targets: [{ host: '127.0.0.1', port: up, weight: 2 }, { host: '127.0.0.1', port: down, backup: true }],
    health_check: { interval_s: 1, timeout_s: 1, rise: 1, fall: 1 },
  });
  const page = await (await browser()).newPage();
  page.setDefaultTimeout(30000);
  await page.goto(url);
  const details = page.getByRole('button', { name: 'Details of pool' });
  assert.equal(await details.getAttribute('aria-expanded'), 'false');
  await details.click();
  assert.equal(await details.getAttribute('aria-expanded'), 'true');
  const panel = page.getByRole('region', { name: /^Details of "pool" \(TCP 127\.0\.0\.1:\d+\)$/ });
  assert.equal(await panel.getByRole('heading', { level: 3 }).evaluate((el) => el === document.activeElement), true);
  const target = (port) => panel.locator('table.target-health tbody tr', { hasText: `127.0.0.1:${port} ` });
  // The health checks (one a second) tell; the page follows on its own refresh.
  await target(up).locator('.health-up').waitFor();
  await target(down).locator('.health-down').waitFor();
  assert.match(await target(up).locator('td').first().textContent(), /\(weight 2\)$/);
  assert.match(await target(down).locator('td').first().textContent(), /\(backup\)$/);
  assert.equal(await target(up).locator('td').nth(1).textContent(), '\u25CF up');
  assert.equal(await target(down).locator('td').nth(1).textContent(), '\u2716 down');
  assert.match(await target(down).locator('td.last-error').textContent(), /Connection refused/);
  assert.equal(await target(up).locator('td.last-error').textContent(), '\u2014');

  // Hide: the panel goes, and the focus returns to the button.
  await panel.getByRole('button', { name: 'Hide details of "pool"' }).click();
  await panel.waitFor({ state: 'detached' });
  assert.equal(await details.getAttribute('aria-expanded'), 'false');
  assert.equal(await details.evaluate((el) => el === document.activeElement), true);
});

test('live connections on demand, a page at a time, closed after a confirmation', { timeout: 300000 }, async () => {
  const { url } = await startDaemon('conns');
  const target = await echoServer();
  const f = await call(url, 'POST', '/api/v1/forwards', {
    name: 'live', protocol: 'tcp', listen_host: '127.0.0.1', listen_port: 0, targets: [{ host: '127.0.0.1', port: target }],
  });
  const [a, b] = [await liveClient(f.listen_port), await liveClient(f.listen_port)];
  const page = await (await browser()).newPage();
  page.setDefaultTimeout(30000);
  const deletes = [];
  page.on('request', (req) => { if (req.method() === 'DELETE') deletes.push(req.url()); });
  await page.goto(url);

  // One a page (the page asks for 100; here the request asks for 1), then More for the next.
  const isList = (u) => u.pathname === `/api/v1/forwards/${f.id}/connections`;
  await page.route(isList, (route) => {
    const u = new URL(route.request().url());
    u.searchParams.set('limit', '1');
    route.continue({ url: u.toString() });
  });
  await page.getByRole('button', { name: 'Details of live' }).click();
  const panel = page.getByRole('region', { name: /^Details of "live"/ });
  const rows = panel.locator('table.conns tbody tr');
  const more = panel.getByRole('button', { name: 'More connections' });
  await more.waitFor();
  assert.equal(await rows.count(), 1);
  await more.click();
  await more.waitFor({ state: 'hidden' });
  assert.equal(await rows.count(), 2);
  await page.unroute(isList);
  const cells = (client) => panel.locator('table.conns tbody tr', { hasText: client }).locator('td').allTextContents();
  const [client, listen, to, state] = await cells(a.name);
  assert.deepEqual([client, listen, to, state], [a.name, `127.0.0.1:${f.listen_port}`, `127.0.0.1:${target}`, 'relaying']);
  assert.equal((await cells(b.name))[0], b.name);

  // On demand: a new connection appears after Refresh, not by itself.
  const c = await liveClient(f.listen_port);
  await nextRefresh(page);
  assert.equal(await rows.count(), 2);
  await panel.getByRole('button', { name: 'Refresh connections' }).click();
  await panel.locator('table.conns tbody tr', { hasText: c.name }).waitFor();
  assert.equal(await rows.count(), 3);

  // Close, confirmation dismissed: nothing is sent, and the connection carries on.
  const closeA = panel.getByRole('button', { name: `Close connection from ${a.name}` });
  page.once('dialog', (d) => {
    assert.match(d.message(), new RegExp(`^Close the connection from ${a.name} to 127\\.0\\.0\\.1:${target}\\?`));
    d.dismiss();
  });
  await closeA.click();
  assert.deepEqual(deletes, []);
  assert.equal(await rows.count(), 3);
  assert.equal(await a.echo('still here'), 'still here');

  // Close, confirmed: the row goes and the client sees its connection end; the others carry on.
  page.once('dialog', (d) => d.accept());
  await closeA.click();
  await closeA.waitFor({ state: 'detached' });
  await within(a.closed, 'the closed client seeing it');
  await panel.getByRole('status').getByText(`Closed the connection from ${a.name}; 2 listed.`).waitFor();
  assert.equal(deletes.length, 1);
  assert.equal(await b.echo('on'), 'on');
  assert.equal(await c.echo('on'), 'on');

  // A connection that ended meanwhile: the DELETE finds it gone (404), and the page says so.
  b.s.destroy();
  const listed = async () => (await call(url, 'GET', `/api/v1/forwards/${f.id}/connections`)).connections.map((x) => x.client);
  await within((async () => { while ((await listed()).includes(b.name)) await new Promise((ok) => setTimeout(ok, 50)); })(),
    'the daemon seeing the client go');
  page.once('dialog', (d) => d.accept());
  await panel.getByRole('button', { name: `Close connection from ${b.name}` }).click();
  await panel.getByRole('status').getByText(`The connection from ${b.name} was already gone; 1 listed.`).waitFor();
  assert.equal(await rows.count(), 1);
  assert.equal(await panel.getByRole('alert').isHidden(), true);
  assert.deepEqual(await listed(), [c.name]);

  // A UDP forward lists its sessions the same way; Close drops one.
  const udpTarget = dgram.createSocket('udp4');
  udpTarget.on('message', (m, from) => udpTarget.send(m, from.port, from.address));
  cleanups.push(() => udpTarget.close());
  await new Promise((resolve) => udpTarget.bind(0, '127.0.0.1', resolve));
  const u = await call(url, 'POST', '/api/v1/forwards', {
    name: 'udp-live', protocol: 'udp', listen_host: '127.0.0.1', listen_port: 0,
    targets: [{ host: '127.0.0.1', port: udpTarget.address().port }],
  });
  const udpClient = dgram.createSocket('udp4');
  cleanups.push(() => udpClient.close());
  await new Promise((resolve) => udpClient.bind(0, '127.0.0.1', resolve));
  const answered = new Promise((resolve) => udpClient.once('message', resolve));
  udpClient.send('ping', u.listen_port, '127.0.0.1');
  await within(answered, 'the UDP echo');
  const session = `127.0.0.1:${udpClient.address().port}`;
  await page.getByRole('button', { name: 'Details of udp-live' }).click();
  const udpPanel = page.getByRole('region', { name: /^Details of "udp-live"/ });
  const udpRow = udpPanel.locator('table.conns tbody tr', { hasText: session });
  await udpRow.waitFor();
  assert.equal(await udpRow.locator('td').nth(3).textContent(), 'active');
  page.once('dialog', (d) => {
    assert.match(d.message(), new RegExp(`^Close the UDP session of ${session} .*The session is dropped\\.$`));
    d.accept();
  });
  await udpPanel.getByRole('button', { name: `Close session from ${session}` }).click();
  await udpPanel.getByRole('status').getByText(`Closed the UDP session of ${session}; 0 listed.`).waitFor();
  assert.deepEqual((await call(url, 'GET', `/api/v1/forwards/${u.id}/connections`)).connections, []);
});
