// portrelay admin page: lists forwards with live stats and changes them through the REST API.
'use strict';

const $ = (id) => document.getElementById(id);
// The form's named inputs are the page's one list of a forward's scalar fields: name="<API field>",
// inputmode="numeric" for numbers, a checkbox for a boolean, data-nullable when empty means null,
// inside .udp-only or .tcp-only for fields of one protocol.
// A new field is one block in index.html (its input and its <p class="error" id="err-<field>">).
// The pool (`targets`, rows of unnamed inputs), the optional objects `health_check` and
// `bandwidth_limit` and the `allow` and `deny` lists (a textarea each, one entry per line) are read
// and filled by their own functions below: the page always sends `targets`, never the target_host/target_port shorthand.
function formInputs() {
  return [...$('forward-form').elements].filter((el) => el.name);
}
let token = sessionStorage.getItem('portrelay-token') || '';
let editing = null;           // the forward being edited, or null when the form creates
const samples = new Map();    // id -> {t, bytes}: the last reading, for throughput
let tokenPrompt = null;       // one prompt shared by every request that met a 401
let listedAt = null;          // when the table last showed an answer of the list, or null before the first
let requested = 0;            // list requests started so far
let shown = 0;                // the latest of them whose outcome the page shows

// A non-2xx answer: its status, and the message of the JSON error body when there was one.
class ApiError extends Error {
  constructor(status, detail, field) {
    super(detail || `The API answered ${status}.`);
    this.status = status;
    this.detail = detail;
    this.field = field;
  }
}

// A daemon that takes the connection but never answers must not leave the page waiting for ever.
const requestTimeoutMs = 15000;

// One request; on 401 it asks for the token (once for all waiting callers) and tries again.
async function api(method, path, body) {
  for (;;) {
    const headers = {};
    if (token) headers.Authorization = 'Bearer ' + token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(requestTimeoutMs),
    });
    if (res.status === 401) {
      await askToken(token !== '');
      continue;
    }
    const data = res.status === 204 ? null : await res.json().catch(() => null);
    if (!res.ok) throw new ApiError(res.status, data?.error?.message, data?.error?.field);
    return data;
  }
}

function askToken(wasRefused) {
  if (tokenPrompt) return tokenPrompt;
  const dialog = $('token-dialog');
  $('token-error').hidden = !wasRefused;
  $('token-error').textContent = wasRefused ? 'That token was refused. Try again.' : '';
  tokenPrompt = new Promise((resolve) => {
    $('token-form').onsubmit = (ev) => {
      ev.preventDefault();
      token = $('token-input').value.trim();
      sessionStorage.setItem('portrelay-token', token);  // this tab only; never a cookie or a URL
      $('token-input').value = '';
      dialog.close();
      tokenPrompt = null;
      resolve();
    };
  });
  dialog.showModal();
  $('token-input').focus();
  return tokenPrompt;
}

function humanBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(1)) + ' ' + units[i];
}

const endpoint = (host, port) => (host.includes(':') ? `[${host}]` : host) + ':' + port;
// A forward's listen address, with its range of ports when it has one: "0.0.0.0:40000-40063".
const listenText = (f) => endpoint(f.listen_host, f.listen_port) + (f.listen_port_end ? `-${f.listen_port_end}` : '');

function throughput(f) {
  const now = performance.now();
  const bytes = f.stats.bytes_up + f.stats.bytes_down;
  const last = samples.get(f.id);
  samples.set(f.id, { t: now, bytes });
  if (!last || now - last.t < 100) return last?.text ?? '–';
  const text = humanBytes(Math.max(0, (bytes - last.bytes) * 1000 / (now - last.t))) + '/s';
  samples.get(f.id).text = text;
  return text;
}

function cell(row, i) { return row.children[i]; }

// A target's health as a word with a symbol, so it does not rest on colour alone (the word is what
// a screen reader says; the symbol is hidden from it).
const healthSymbols = { up: '\u25CF', down: '\u2716', unchecked: '\u25CB' };

// Puts a list in `td`, one item per line (filled by fillItem), unless it shows these lines already:
// an unchanged list is not rebuilt.
function fillList(td, className, lines, fillItem) {
  const key = JSON.stringify(lines);
  if (td.dataset.key === key) return;
  td.dataset.key = key;
  const list = document.createElement('ul');
  list.className = className;
  for (const line of lines) {
    const item = document.createElement('li');
    if (line.title) item.title = line.title;
    fillItem(item, line);
    list.appendChild(item);
  }
  td.replaceChildren(list);
}

// The Targets cell: one line per target with its health mark, weight, backup and live connections.
function fillTargets(td, f) {
  const rows = f.stats.targets || [];
  const lines = rows.map((t, i) => {
    const spec = f.targets[i] || {};
    const extra = [];
    if (spec.weight > 1 && f.balance !== 'first') extra.push(`weight ${spec.weight}`);
    if (spec.backup) extra.push('backup');
    extra.push(`${t.connections_active} active`);
    if (t.health === 'down' && t.last_error) extra.push(t.last_error);  // why, without hovering
    const title = `${t.health} since ${t.since}` + (t.last_error ? `: ${t.last_error}` : '');
    return { health: t.health, text: `${endpoint(t.host, t.port)} \u00B7 ${extra.join(' \u00B7 ')}`, title };
  });
  fillList(td, 'targets', lines, (item, line) => {
    const mark = document.createElement('span');
    mark.className = `health health-${line.health}`;
    const symbol = document.createElement('span');
    symbol.setAttribute('aria-hidden', 'true');
    symbol.textContent = (healthSymbols[line.health] || '?') + ' ';
    mark.append(symbol, line.health);
    item.append(mark, ' ', line.text);
  });
}

// The Policy cell: who may connect and how much, one line each, or that there is no policy.
function fillPolicy(td, f) {
  const lines = [];
  const list = (word, entries) => {
    if (!entries.length) return;
    // Two entries, or the first and a count; all of them on hover.
    const shown = entries.length <= 2 ? entries.join(', ') : `${entries[0]} and ${entries.length - 1} more`;
    lines.push({ text: `${word} ${shown}`, title: entries.join('\n') });
  };
  list('allow', f.allow || []);
  list('deny', f.deny || []);
  const unit = (f.protocol === 'udp' ? 'session' : 'connection') + (f.max_connections === 1 ? '' : 's');
  const limits = [];
  if (f.max_connections) limits.push(`at most ${f.max_connections} ${unit}`);
  if (f.max_connections_per_source) limits.push(`${f.max_connections_per_source} per client address`);
  if (limits.length) lines.push({ text: limits.join(' \u00B7 ') });
  const bw = f.bandwidth_limit;
  if (bw) {
    const rates = [];
    if (bw.up_bytes_per_s) rates.push(`up ${humanBytes(bw.up_bytes_per_s)}/s`);
    if (bw.down_bytes_per_s) rates.push(`down ${humanBytes(bw.down_bytes_per_s)}/s`);
    if (bw.burst_bytes) rates.push(`burst ${humanBytes(bw.burst_bytes)}`);
    if (rates.length) lines.push({ text: rates.join(' \u00B7 ') });
  }
  if (f.accept_proxy_protocol) lines.push({ text: 'clients send a PROXY header' });
  if (f.proxy_protocol) lines.push({ text: `PROXY ${f.proxy_protocol} to targets` });
  if (f.source_address) lines.push({ text: `from ${f.source_address}` });
  if (!lines.length) lines.push({ text: 'everyone, no limits' });
  fillList(td, 'policy', lines, (item, line) => { item.textContent = line.text; });
}

function makeRow(f) {
  const row = document.createElement('tr');
  row.dataset.id = f.id;
  for (let i = 0; i < 14; i++) row.appendChild(document.createElement('td'));
  [6, 7, 8, 9, 10, 11].forEach((i) => cell(row, i).classList.add('num'));
  cell(row, 12).classList.add('policy');
  // State: the word and Retry (only in error), then the reason on one line, in full on demand.
  const state = document.createElement('span');
  state.className = 'state';
  state.id = `state-${f.id}`;
  const retryButton = document.createElement('button');
  retryButton.type = 'button';
  retryButton.className = 'retry';
  retryButton.textContent = 'Retry';
  retryButton.addEventListener('click', () => retry(row, retryButton));
  const reason = document.createElement('details');
  reason.className = 'reason';
  reason.appendChild(document.createElement('summary'));
  cell(row, 4).append(state, retryButton, reason);
  const toggle = document.createElement('input');
  toggle.type = 'checkbox';
  toggle.setAttribute('aria-describedby', state.id);  // "checked" is read with the state beside it
  toggle.addEventListener('change', () => setEnabled(Number(row.dataset.id), toggle));
  cell(row, 5).appendChild(toggle);
  const actions = document.createElement('div');
  actions.className = 'actions';
  const edit = document.createElement('button');
  edit.type = 'button';
  edit.textContent = 'Edit';
  edit.addEventListener('click', () => startEdit(row.forward));
  const del = document.createElement('button');
  del.type = 'button';
  del.className = 'danger';
  del.textContent = 'Delete';
  del.addEventListener('click', () => remove(row.forward));
  actions.append(edit, del);
  cell(row, 13).appendChild(actions);
  return row;
}

function fillRow(row, f) {
  row.forward = f;
  const label = f.name || `forward ${f.id}`;
  cell(row, 0).textContent = f.name || '—';
  cell(row, 1).textContent = f.protocol.toUpperCase();
  cell(row, 2).textContent = listenText(f);
  fillTargets(cell(row, 3), f);
  // Updated in place, so an opened reason stays open and a focused summary keeps its focus.
  const stateCell = cell(row, 4);
  stateCell.className = 'state-' + f.state;
  const [state, retryButton, reason] = stateCell.children;
  setText(state, f.state);
  retryButton.hidden = f.state !== 'error';
  retryButton.setAttribute('aria-label', `Retry ${label}`);
  reason.hidden = !f.error;
  setText(reason.firstChild, f.error || '');
  // An enabled forward in error stays checked (it is enabled, and stored so), drawn in the error colour.
  const toggle = cell(row, 5).firstChild;
  if (document.activeElement !== toggle) toggle.checked = f.enabled;
  toggle.setAttribute('aria-label', `Enabled: ${label}`);
  toggle.classList.toggle('not-listening', f.state === 'error');
  toggle.title = f.state === 'error' ? 'Enabled, but not listening: see its state' : '';
  cell(row, 6).textContent = f.stats.connections_active;
  cell(row, 7).textContent = f.stats.connections_total;
  cell(row, 8).textContent = humanBytes(f.stats.bytes_up);
  cell(row, 9).textContent = humanBytes(f.stats.bytes_down);
  cell(row, 10).textContent = throughput(f);
  // A forward that reads PROXY headers adds the clients whose header was bad, missing or late.
  const proxyErrors = f.accept_proxy_protocol ? f.stats.proxy_errors ?? 0 : null;
  cell(row, 11).textContent = `${f.stats.refused_acl} / ${f.stats.refused_limit}` +
    (proxyErrors === null ? '' : ` / ${proxyErrors}`);
  cell(row, 11).title = `refused by the allow and deny lists: ${f.stats.refused_acl}, by a connection limit: ` +
    f.stats.refused_limit + (proxyErrors === null ? '' : `, for a bad PROXY header: ${proxyErrors}`);
  fillPolicy(cell(row, 12), f);
  const [edit, del] = cell(row, 13).firstChild.children;
  edit.setAttribute('aria-label', `Edit ${label}`);
  del.setAttribute('aria-label', `Delete ${label}`);
}

// Rows are updated in place, so focus and keyboard position survive each refresh.
function render(list) {
  $('loading').hidden = true;
  $('empty').hidden = list.length > 0;
  $('forwards').hidden = list.length === 0;
  const body = $('forwards').tBodies[0];
  const rows = new Map([...body.rows].map((r) => [Number(r.dataset.id), r]));
  let previous = null;
  for (const f of list) {
    let row = rows.get(f.id);
    if (!row) row = makeRow(f);
    rows.delete(f.id);
    fillRow(row, f);
    // A row is moved only when it is not in its place already: moving a node drops the focus in it.
    const place = previous ? previous.nextSibling : body.firstChild;
    if (row !== place) body.insertBefore(row, place);
    previous = row;
  }
  for (const [id, row] of rows) { row.remove(); samples.delete(id); }
}

// Assigns only a changed text, so a live region announces changes and not every refresh.
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function failureReason(e) {
  if (e?.name === 'TimeoutError') return `the daemon did not answer within ${requestTimeoutMs / 1000} s`;
  if (!(e instanceof ApiError)) return 'the daemon is not reachable';
  return `the API answered ${e.status}` + (e.detail ? ` (${e.detail})` : '');
}

// "4 forwards: 2 active, 1 in error, 1 disabled", every part even when it is 0.
function countText(list) {
  const total = `${list.length} forward${list.length === 1 ? '' : 's'}`;
  if (list.length === 0) return total;
  const n = (state) => list.filter((f) => f.state === state).length;
  return `${total}: ${n('active')} active, ${n('error')} in error, ${n('disabled')} disabled`;
}

// Requests may overlap (the timer, and a refresh after each change); an answer older than the one
// on the page is dropped. A failure keeps the rows already shown and marks them as out of date.
async function refresh() {
  const seq = ++requested;
  let list = null;
  let failure = null;
  try {
    list = await api('GET', '/api/v1/forwards');
  } catch (e) {
    failure = e;
  }
  if (seq < shown) return;
  shown = seq;
  if (list) {
    listedAt = new Date();
    render(list);
    $('load-error').hidden = true;
    $('forwards').classList.remove('stale');
    setText($('status'), countText(list));
    $('status').classList.toggle('has-error', list.some((f) => f.state === 'error'));
    setText($('updated'), `updated ${listedAt.toLocaleTimeString()}`);
    return;
  }
  $('loading').hidden = true;
  const reason = failureReason(failure);
  if (listedAt) {
    $('forwards').classList.add('stale');
    setText($('load-error'), `Cannot update the forwards: ${reason}. What is shown is from ` +
      `${listedAt.toLocaleTimeString()} and may be out of date. Trying again every 2 seconds.`);
    setText($('updated'), `not updated since ${listedAt.toLocaleTimeString()}`);
  } else {
    setText($('load-error'), `Cannot load the forwards: ${reason}. Trying again every 2 seconds.`);
  }
  $('load-error').hidden = false;
}

function showActionError(message) {
  $('action-error').textContent = message;
  $('action-error').hidden = !message;
}

async function setEnabled(id, toggle) {
  showActionError('');
  try {
    await api('PATCH', `/api/v1/forwards/${id}`, { enabled: toggle.checked });
  } catch (e) {
    toggle.checked = !toggle.checked;  // nothing the API refused may look as if it worked
    showActionError(e.message);
  }
  refresh();
}

// PATCH {"enabled": true} of a forward in error binds again: 200 with state active, or still error
// with a fresh reason. The answer is shown at once; older list answers still on the way are dropped.
async function retry(row, button) {
  if (button.getAttribute('aria-disabled') === 'true') return;  // not `disabled`: that would drop its focus
  showActionError('');
  button.setAttribute('aria-disabled', 'true');
  button.textContent = 'Retrying…';
  try {
    const f = await api('PATCH', `/api/v1/forwards/${row.forward.id}`, { enabled: true });
    shown = ++requested;
    const hadFocus = document.activeElement === button;
    fillRow(row, f);
    if (f.state === 'error') {
      showActionError(`Retry: ${f.name ? `"${f.name}"` : `#${f.id}`} is still not listening: ${f.error}`);
    } else if (hadFocus) {
      cell(row, 5).firstChild.focus();  // the button is gone; the switch is the next control
    }
  } catch (e) {
    showActionError(e.message);
  } finally {
    button.removeAttribute('aria-disabled');
    button.textContent = 'Retry';
  }
  refresh();
}

async function remove(f) {
  showActionError('');
  const label = f.name ? `"${f.name}"` : `#${f.id}`;
  if (!confirm(`Delete forward ${label} (${listenText(f)})? Its live connections close at once.`)) return;
  try {
    await api('DELETE', `/api/v1/forwards/${f.id}`);
    if (editing && editing.id === f.id) stopEdit();
  } catch (e) {
    showActionError(e.message);
  }
  refresh();
}

function clearErrors() {
  document.querySelectorAll('#forward-form .error').forEach((p) => {
    p.hidden = true;
    p.textContent = '';
  });
  document.querySelectorAll('#forward-form [aria-invalid]').forEach((el) => el.removeAttribute('aria-invalid'));
}

// ---- the pool in the form: rows of host, port, weight and backup ----

function targetRows() { return [...$('target-rows').rows]; }

// Labels say which row ("Target 2 host"), so they are renumbered after a removal.
function numberTargets() {
  const rows = targetRows();
  rows.forEach((tr, i) => {
    const n = i + 1;
    const [host, port, weight, backup] = tr.querySelectorAll('input');
    host.setAttribute('aria-label', `Target ${n} host`);
    port.setAttribute('aria-label', `Target ${n} port`);
    weight.setAttribute('aria-label', `Target ${n} weight`);
    backup.setAttribute('aria-label', `Target ${n} backup`);
    const remove = tr.querySelector('button');
    remove.setAttribute('aria-label', `Remove target ${n}`);
    remove.disabled = rows.length === 1;  // a pool has at least one target
  });
}

function addTarget(t = {}) {
  const tr = document.createElement('tr');
  const input = (value, numeric) => {
    const el = document.createElement('input');
    el.autocomplete = 'off';
    if (numeric) el.inputMode = 'numeric';
    el.value = value ?? '';
    const td = document.createElement('td');
    td.appendChild(el);
    tr.appendChild(td);
    return el;
  };
  input(t.host, false);
  input(t.port, true);
  input(t.weight ?? 1, true);
  const backup = document.createElement('input');
  backup.type = 'checkbox';
  backup.checked = Boolean(t.backup);
  const remove = document.createElement('button');
  remove.type = 'button';
  remove.textContent = 'Remove';
  remove.addEventListener('click', () => {
    const next = tr.nextElementSibling || tr.previousElementSibling;
    tr.remove();
    numberTargets();
    next?.querySelector('input').focus();
  });
  for (const el of [backup, remove]) {
    const td = document.createElement('td');
    td.appendChild(el);
    tr.appendChild(td);
  }
  $('target-rows').appendChild(tr);
  numberTargets();
  return tr;
}

function setTargets(list) {
  $('target-rows').replaceChildren();
  for (const t of list.length ? list : [{}]) addTarget(t);
}

// Numbers go as numbers; anything else goes as typed, so the API's message names the problem.
function typed(text, numeric) {
  return numeric && /^-?\d+$/.test(text) ? Number(text) : text;
}

function formTargets() {
  return targetRows().map((tr) => {
    const [host, port, weight, backup] = tr.querySelectorAll('input');
    const t = { host: host.value.trim(), port: typed(port.value.trim(), true) };
    if (weight.value.trim() !== '') t.weight = typed(weight.value.trim(), true);
    t.backup = backup.checked;
    return t;
  });
}

// ---- optional objects of numbers (health_check, bandwidth_limit): a checkbox and an input per key ----

const optionals = {
  // An empty value takes the API's default (port: none, so the target's own).
  health_check: { prefix: 'hc-', keys: ['interval_s', 'timeout_s', 'rise', 'fall', 'port'], nullable: ['port'],
    defaults: { interval_s: 5, timeout_s: 2, rise: 2, fall: 3 } },
  // An empty value is null (that direction not limited, or the default burst); all empty is no limit.
  bandwidth_limit: { prefix: 'bw-', keys: ['up_bytes_per_s', 'down_bytes_per_s', 'burst_bytes'],
    nullable: ['up_bytes_per_s', 'down_bytes_per_s', 'burst_bytes'], defaults: {}, noneIsNull: true },
};

function showOptional(name) {
  const o = optionals[name];
  document.querySelector(`.${o.prefix}fields`).hidden = !$(o.prefix + 'on').checked;
}

// null when the box is not ticked, else the values given.
function formOptional(name) {
  const o = optionals[name];
  if (!$(o.prefix + 'on').checked) return null;
  const value = {};
  for (const key of o.keys) {
    const text = $(o.prefix + key).value.trim();
    if (text !== '') value[key] = typed(text, true);
    else if (o.nullable.includes(key)) value[key] = null;
  }
  return o.noneIsNull && Object.values(value).every((v) => v === null) ? null : value;
}

function setOptional(name, value) {
  const o = optionals[name];
  $(o.prefix + 'on').checked = Boolean(value);
  for (const key of o.keys) $(o.prefix + key).value = value?.[key] ?? o.defaults[key] ?? '';
  showOptional(name);
}

// ---- who may connect: one entry per line; blank lines are not entries ----

// The entries of the list `name` ("allow" or "deny") with the line each is on, from 1.
function formPrefixLines(name) {
  return $('f-' + name).value.split('\n')
    .map((text, i) => ({ text: text.trim(), line: i + 1 }))
    .filter((e) => e.text !== '');
}

function setPrefixes(name, list) {
  $('f-' + name).value = (list || []).join('\n');
}

// The API names an entry by its place in the list ("allow[2] ..."); the textarea may have blank
// lines, so the message also says which line that is.
function withLine(field, message) {
  const m = /^(allow|deny)\[(\d+)\]/.exec(message);
  if (!m || m[1] !== field) return message;
  const entry = formPrefixLines(field)[Number(m[2])];
  return entry ? `${message} (line ${entry.line})` : message;
}

function showUdp() {
  const udp = $('f-protocol').value === 'udp';
  document.querySelectorAll('.udp-only').forEach((el) => { el.hidden = !udp; });
  document.querySelectorAll('.tcp-only').forEach((el) => { el.hidden = udp; });
}

function formBody() {
  const udp = $('f-protocol').value === 'udp';
  const body = {};
  for (const el of formInputs()) {
    if ((el.closest('.udp-only') && !udp) || (el.closest('.tcp-only') && udp)) continue;
    const text = el.value.trim();
    if (el.type === 'checkbox') body[el.name] = el.checked;
    else if (text === '' && 'nullable' in el.dataset) body[el.name] = null;
    else body[el.name] = typed(text, el.inputMode === 'numeric');
  }
  body.targets = formTargets();
  for (const name of Object.keys(optionals)) body[name] = formOptional(name);
  for (const name of ['allow', 'deny']) body[name] = formPrefixLines(name).map((e) => e.text);
  return body;
}

function startEdit(f) {
  editing = f;
  clearErrors();
  for (const el of formInputs()) {
    const value = f[el.name];
    if (value === null && 'nullable' in el.dataset) el.value = '';
    if (value === null || value === undefined) continue;
    if (el.type === 'checkbox') el.checked = value;
    else el.value = value;
  }
  setTargets(f.targets);
  for (const name of Object.keys(optionals)) setOptional(name, f[name]);
  setPrefixes('allow', f.allow);
  setPrefixes('deny', f.deny);
  showUdp();
  $('form-heading').textContent = `Edit forward ${f.name ? `"${f.name}"` : '#' + f.id}`;
  $('submit').textContent = 'Save changes';
  $('cancel-edit').hidden = false;
  $('f-name').focus();
}

function stopEdit() {
  editing = null;
  $('forward-form').reset();
  setTargets([]);
  for (const name of Object.keys(optionals)) setOptional(name, null);
  clearErrors();
  showUdp();
  $('form-heading').textContent = 'New forward';
  $('submit').textContent = 'Create forward';
  $('cancel-edit').hidden = true;
}

async function submit(ev) {
  ev.preventDefault();
  clearErrors();
  const button = $('submit');
  button.disabled = true;
  try {
    if (editing) await api('PATCH', `/api/v1/forwards/${editing.id}`, formBody());
    else await api('POST', '/api/v1/forwards', formBody());
    stopEdit();
    await refresh();
  } catch (e) {
    const where = e.field && $('err-' + e.field) ? e.field : 'form';
    $('err-' + where).textContent = withLine(where, e.message);
    $('err-' + where).hidden = false;
    const input = $('f-' + where);
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      input.setAttribute('aria-describedby', 'err-' + where);
      input.closest('.field').hidden = false;
      // A fieldset (targets, health_check, bandwidth_limit) takes no focus: its first input does.
      (input.tagName === 'FIELDSET' ? input.querySelector('input') : input).focus();
    }
  } finally {
    button.disabled = false;
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('forward-form').addEventListener('submit', submit);
  $('f-protocol').addEventListener('change', showUdp);
  $('cancel-edit').addEventListener('click', stopEdit);
  $('add-target').addEventListener('click', () => addTarget().querySelector('input').focus());
  for (const name of Object.keys(optionals)) {
    $(optionals[name].prefix + 'on').addEventListener('change', () => showOptional(name));
  }
  setTargets([]);
  $('token-dialog').addEventListener('cancel', (ev) => ev.preventDefault());  // a token is needed to go on
  refresh();
  setInterval(refresh, 2000);
});
