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

const humanRate = (bytesPerSecond) => humanBytes(Math.round(bytesPerSecond)) + '/s';

// ---- throughput: the page's own successive readings of each forward's byte counters ----

const historyMs = 5 * 60 * 1000;  // what a chart spans
const readings = new Map();       // forward id -> [{t, up, down}], oldest first, none older than historyMs

// Adds a list answer's counters to the forward's series. A reading within half a second of the last
// one (the refresh right after a change) makes no rate worth drawing; a counter that went back (the
// forward was recreated, the daemon restarted) starts the series again.
function record(f, t) {
  const { bytes_up: up, bytes_down: down } = f.stats;
  let series = readings.get(f.id);
  if (!series) readings.set(f.id, (series = []));
  const last = series[series.length - 1];
  if (last && (up < last.up || down < last.down)) series.length = 0;
  else if (last && t - last.t < 500) return;
  series.push({ t, up, down });
  while (series[0].t < t - historyMs) series.shift();
}

function rate(a, b) {
  const seconds = (b.t - a.t) / 1000;
  return { from: a.t, to: b.t, up: (b.up - a.up) / seconds, down: (b.down - a.down) / seconds };
}

// Bytes per second between successive readings, oldest first.
function rates(id) {
  const series = readings.get(id) || [];
  return series.slice(1).map((b, i) => rate(series[i], b));
}

// The latest of them, or null before the second reading.
function currentRate(id) {
  const series = readings.get(id) || [];
  return series.length < 2 ? null : rate(series[series.length - 2], series[series.length - 1]);
}

const svgNs = 'http://www.w3.org/2000/svg';
const chartSize = { width: 100, height: 28 };

// The Throughput cell: "–" until two readings, then a chart of up and down, each interval drawn as a
// level line (the rate is an average over it), and the current rates as its legend. The chart spans
// the readings it has, up to the last 5 minutes.
function makeChart(td) {
  const waiting = document.createElement('span');
  waiting.textContent = '–';
  const chart = document.createElement('div');
  chart.className = 'chart';
  chart.hidden = true;
  const svg = document.createElementNS(svgNs, 'svg');
  svg.setAttribute('viewBox', `0 0 ${chartSize.width} ${chartSize.height}`);
  svg.setAttribute('width', chartSize.width);
  svg.setAttribute('height', chartSize.height);
  svg.setAttribute('role', 'img');
  const line = (name) => {
    const el = document.createElementNS(svgNs, 'polyline');
    el.setAttribute('class', name);
    return el;
  };
  svg.append(document.createElementNS(svgNs, 'title'), line('down'), line('up'));
  const legend = document.createElement('div');
  legend.className = 'legend';
  const key = (name) => {
    const el = document.createElement('span');
    el.className = name;
    return el;
  };
  legend.append(key('up'), key('down'));
  chart.append(svg, legend);
  td.append(waiting, chart);
}

function fillChart(td, f, label) {
  const [waiting, chart] = td.children;
  const list = rates(f.id);
  waiting.hidden = list.length > 0;
  chart.hidden = list.length === 0;
  if (!list.length) return;
  const [svg, legend] = chart.children;
  const [title, down, up] = svg.children;
  const { width, height } = chartSize;
  const now = list[list.length - 1].to;
  const span = now - list[0].from;
  const peak = Math.max(1, ...list.map((r) => Math.max(r.up, r.down)));
  const x = (t) => (width * (1 - (now - t) / span)).toFixed(1);
  const y = (rate) => (height - 1 - (rate / peak) * (height - 2)).toFixed(1);
  const points = (key) => list.map((r) => `${x(r.from)},${y(r[key])} ${x(r.to)},${y(r[key])}`).join(' ');
  up.setAttribute('points', points('up'));
  down.setAttribute('points', points('down'));
  const current = list[list.length - 1];
  setText(legend.children[0], `up ${humanRate(current.up)}`);
  setText(legend.children[1], `down ${humanRate(current.down)}`);
  const seconds = Math.round(span / 1000);
  const last = seconds < 90 ? `${seconds} seconds` : `${Math.round(seconds / 60)} minutes`;
  const text = `Throughput of ${label} over the last ${last}: now up ` +
    `${humanRate(current.up)}, down ${humanRate(current.down)}; the top of the chart is ${humanRate(peak)}`;
  setText(title, text);
  svg.setAttribute('aria-label', text);
}

function cell(row, i) { return row.children[i]; }

// A target's health as a word with a symbol, so it does not rest on colour alone (the word is what
// a screen reader says; the symbol is hidden from it).
const healthSymbols = { up: '\u25CF', down: '\u2716', unchecked: '\u25CB' };

function healthMark(health) {
  const mark = document.createElement('span');
  mark.className = `health health-${health}`;
  const symbol = document.createElement('span');
  symbol.setAttribute('aria-hidden', 'true');
  symbol.textContent = (healthSymbols[health] || '?') + ' ';
  mark.append(symbol, health);
  return mark;
}

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
  fillList(td, 'targets', lines, (item, line) => item.append(healthMark(line.health), ' ', line.text));
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
  [6, 7, 8, 9, 11].forEach((i) => cell(row, i).classList.add('num'));
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
  makeChart(cell(row, 10));
  const actions = document.createElement('div');
  actions.className = 'actions';
  const details = document.createElement('button');
  details.type = 'button';
  details.textContent = 'Details';
  details.setAttribute('aria-expanded', 'false');
  details.setAttribute('aria-controls', `detail-${f.id}`);
  details.addEventListener('click', () => toggleDetails(row));
  const edit = document.createElement('button');
  edit.type = 'button';
  edit.textContent = 'Edit';
  edit.addEventListener('click', () => startEdit(row.forward));
  const del = document.createElement('button');
  del.type = 'button';
  del.className = 'danger';
  del.textContent = 'Delete';
  del.addEventListener('click', () => remove(row.forward));
  actions.append(details, edit, del);
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
  fillChart(cell(row, 10), f, label);
  // A forward that reads PROXY headers adds the clients whose header was bad, missing or late.
  const proxyErrors = f.accept_proxy_protocol ? f.stats.proxy_errors ?? 0 : null;
  cell(row, 11).textContent = `${f.stats.refused_acl} / ${f.stats.refused_limit}` +
    (proxyErrors === null ? '' : ` / ${proxyErrors}`);
  cell(row, 11).title = `refused by the allow and deny lists: ${f.stats.refused_acl}, by a connection limit: ` +
    f.stats.refused_limit + (proxyErrors === null ? '' : `, for a bad PROXY header: ${proxyErrors}`);
  fillPolicy(cell(row, 12), f);
  const [details, edit, del] = cell(row, 13).firstChild.children;
  details.setAttribute('aria-label', `Details of ${label}`);
  edit.setAttribute('aria-label', `Edit ${label}`);
  del.setAttribute('aria-label', `Delete ${label}`);
}

// Rows are updated in place, so focus and keyboard position survive each refresh.
function render(list) {
  listed = list;
  $('loading').hidden = true;
  $('empty').hidden = list.length > 0;
  $('forwards').hidden = list.length === 0;
  $('table-tools').hidden = list.length === 0;
  const body = $('forwards').tBodies[0];
  const rows = new Map([...body.rows].map((r) => [Number(r.dataset.id), r]));
  for (const f of list) {
    const row = rows.get(f.id) || body.appendChild(makeRow(f));
    rows.delete(f.id);
    fillRow(row, f);
    const panel = panels.get(f.id);
    if (panel) fillPanel(panel, f);
  }
  for (const [id, row] of rows) {
    row.remove();
    readings.delete(id);
    panels.get(id)?.remove();
    panels.delete(id);
  }
  arrange();
}

// ---- the table's order and filter, both kept across refreshes ----

let listed = [];                                    // the forwards of the latest list shown, by id
const sorting = { key: null, descending: false };   // key null: the API's order (by id)
const targetsText = (f) => f.targets.map((t) => endpoint(t.host, t.port)).join(' ');

// A column's value to sort by: numbers sort as numbers, text in natural order ("web2" before "web10").
const sortKeys = {
  name: (f) => f.name,
  protocol: (f) => f.protocol,
  listen: (f) => f.listen_port,
  targets: targetsText,
  state: (f) => f.state,
  enabled: (f) => Number(f.enabled),
  active: (f) => f.stats.connections_active,
  total: (f) => f.stats.connections_total,
  up: (f) => f.stats.bytes_up,
  down: (f) => f.stats.bytes_down,
  throughput: (f) => { const r = currentRate(f.id); return r ? r.up + r.down : -1; },
  refused: (f) => f.stats.refused_acl + f.stats.refused_limit + (f.stats.proxy_errors ?? 0),
};

function compare(a, b) {
  const key = sortKeys[sorting.key];
  const [x, y] = [key(a), key(b)];
  const order = typeof x === 'number' ? x - y : x.localeCompare(y, undefined, { numeric: true, sensitivity: 'base' });
  return (sorting.descending ? -order : order) || a.id - b.id;
}

// The filter is a case-insensitive piece of a forward's name, protocol, listen address and port,
// one of its targets, or its state.
function matches(f, needle) {
  const text = [f.name, f.protocol, listenText(f), targetsText(f), f.state].join('\n').toLowerCase();
  return text.includes(needle);
}

// Puts the rows in the chosen order and hides the ones the filter leaves out.
function arrange() {
  const body = $('forwards').tBodies[0];
  const rows = new Map([...body.rows].map((r) => [Number(r.dataset.id), r]));
  const filter = $('filter').value.trim();
  const needle = filter.toLowerCase();
  let previous = null;
  let count = 0;
  for (const f of sorting.key ? [...listed].sort(compare) : listed) {
    const row = rows.get(f.id);
    if (!row) continue;
    row.hidden = needle !== '' && !matches(f, needle);
    if (!row.hidden) count++;
    // A row is moved only when it is not in its place already: moving a node drops the focus in it.
    const place = previous ? previous.nextSibling : body.firstChild;
    if (row !== place) body.insertBefore(row, place);
    previous = row;
  }
  setText($('filter-count'), needle ? `${count} of ${listed.length} shown` : '');
  $('no-match').hidden = !needle || count > 0 || listed.length === 0;
  setText($('no-match'), `No forward matches \u201C${filter}\u201D.`);
}

// A click on a column's header sorts by it, ascending; another click turns the order around.
function sortBy(key) {
  sorting.descending = sorting.key === key && !sorting.descending;
  sorting.key = key;
  for (const th of $('forwards').tHead.querySelectorAll('th[data-sort]')) {
    if (th.dataset.sort === key) th.setAttribute('aria-sort', sorting.descending ? 'descending' : 'ascending');
    else th.removeAttribute('aria-sort');
  }
  arrange();
}

// ---- a forward's details, on demand: its targets with their health, and its live connections ----

const panels = new Map();          // forward id -> its open details panel
const connectionsPageSize = 100;

const detailsButton = (id) => document.querySelector(`[aria-controls="detail-${id}"]`);

function toggleDetails(row) {
  const id = Number(row.dataset.id);
  if (panels.has(id)) {
    hideDetails(id);
    return;
  }
  const panel = $('detail-template').content.firstElementChild.cloneNode(true);
  panel.id = `detail-${id}`;
  panel.dataset.id = id;
  panel.querySelector('h3').id = `detail-heading-${id}`;
  panel.setAttribute('aria-labelledby', `detail-heading-${id}`);
  panel.querySelector('.hide-detail').addEventListener('click', () => hideDetails(id));
  panel.querySelector('.load-conns').addEventListener('click', () => loadConnections(panel, false));
  panel.querySelector('.more-conns').addEventListener('click', () => loadConnections(panel, true));
  panels.set(id, panel);
  $('details').appendChild(panel);
  fillPanel(panel, row.forward);
  detailsButton(id).setAttribute('aria-expanded', 'true');
  panel.querySelector('h3').focus();
  loadConnections(panel, false);
}

function hideDetails(id) {
  panels.get(id).remove();
  panels.delete(id);
  const button = detailsButton(id);
  button.setAttribute('aria-expanded', 'false');
  button.focus();
}

// Filled from each list answer (the same `stats.targets` as GET /api/v1/forwards/{id}), so the
// health stays current without a request of its own.
function fillPanel(panel, f) {
  const label = f.name ? `"${f.name}"` : `#${f.id}`;
  setText(panel.querySelector('h3'), `Details of ${label} (${f.protocol.toUpperCase()} ${listenText(f)})`);
  panel.querySelector('.hide-detail').setAttribute('aria-label', `Hide details of ${label}`);
  const body = panel.querySelector('table.target-health').tBodies[0];
  const targets = f.stats.targets || [];
  const key = JSON.stringify(targets);
  if (body.dataset.key === key) return;
  body.dataset.key = key;
  body.replaceChildren(...targets.map((t, i) => {
    const spec = f.targets[i] || {};
    const extra = [spec.backup ? 'backup' : '', spec.weight > 1 ? `weight ${spec.weight}` : ''].filter(Boolean);
    const tr = document.createElement('tr');
    const texts = [endpoint(t.host, t.port) + (extra.length ? ` (${extra.join(', ')})` : ''), null,
      new Date(t.since).toLocaleString(), t.connections_active, t.connections_total, humanBytes(t.bytes_up),
      humanBytes(t.bytes_down), t.connect_errors, t.last_error || '—'];
    texts.forEach((text, col) => {
      const td = tr.appendChild(document.createElement('td'));
      if (col === 1) td.appendChild(healthMark(t.health));
      else td.textContent = text;
      if (col >= 3 && col <= 7) td.className = 'num';
      if (col === 8) td.className = 'last-error';
    });
    tr.cells[2].title = t.since;
    return tr;
  }));
}

function showConnectionError(panel, message) {
  const p = panel.querySelector('.conn-error');
  p.textContent = message;
  p.hidden = !message;
}

// "12.5 s", "3 min 20 s", "2 h 5 min": how long a connection has been idle.
function duration(seconds) {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const s = Math.floor(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function connectionRow(panel, c) {
  const tr = document.createElement('tr');
  const texts = [c.client, c.listen, c.target ?? 'resolving…', c.state, new Date(c.started_at).toLocaleTimeString(),
    duration(c.idle_s), humanBytes(c.bytes_up), humanBytes(c.bytes_down)];
  texts.forEach((text, col) => {
    const td = tr.appendChild(document.createElement('td'));
    td.textContent = text;
    if (col >= 5) td.className = 'num';
  });
  tr.cells[4].title = c.started_at;
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'danger';
  close.textContent = 'Close';
  close.setAttribute('aria-label', `Close ${c.protocol === 'udp' ? 'session' : 'connection'} from ${c.client}`);
  close.addEventListener('click', () => closeConnection(panel, c, tr));
  tr.appendChild(document.createElement('td')).appendChild(close);
  return tr;
}

// "2 listed, more to load": the rows shown, and whether More would show others.
function connectionsCount(panel) {
  const n = panel.querySelector('table.conns').tBodies[0].rows.length;
  return `${n} listed` + (panel.querySelector('.more-conns').hidden ? '' : ', more to load');
}

// The first page (`more` false: the list starts again) or the next one. Only on demand: a list that
// moved by itself would move the Close buttons under the pointer.
async function loadConnections(panel, more) {
  const seq = panel.seq = (panel.seq || 0) + 1;
  const query = new URLSearchParams({ limit: connectionsPageSize });
  if (more) query.set('after', panel.next);
  let page;
  try {
    page = await api('GET', `/api/v1/forwards/${panel.dataset.id}/connections?${query}`);
  } catch (e) {
    if (seq === panel.seq) showConnectionError(panel, e.message);
    return;
  }
  if (seq !== panel.seq) return;  // a later request of this panel answers instead
  showConnectionError(panel, '');
  const table = panel.querySelector('table.conns');
  if (!more) table.tBodies[0].replaceChildren();
  for (const c of page.connections) table.tBodies[0].appendChild(connectionRow(panel, c));
  table.hidden = table.tBodies[0].rows.length === 0;
  const moreButton = panel.querySelector('.more-conns');
  if (page.next === null && document.activeElement === moreButton) panel.querySelector('.load-conns').focus();
  moreButton.hidden = page.next === null;
  panel.next = page.next;
  const at = new Date().toLocaleTimeString();
  setText(panel.querySelector('.conn-status'), table.hidden ? `No live connections at ${at}.` : `At ${at}: ${connectionsCount(panel)}.`);
}

// After a confirmation, DELETE resets the connection (a UDP session is dropped); 404 means it
// ended by itself meanwhile. Either way its row goes.
async function closeConnection(panel, c, tr) {
  const what = c.protocol === 'udp' ? `the UDP session of ${c.client}` : `the connection from ${c.client}`;
  const effect = c.protocol === 'udp' ? 'The session is dropped.' : 'The client and the target see a reset.';
  if (!confirm(`Close ${what}${c.target ? ` to ${c.target}` : ''}? ${effect}`)) return;
  showConnectionError(panel, '');
  let done;
  try {
    await api('DELETE', `/api/v1/forwards/${panel.dataset.id}/connections/${c.id}`);
    done = `Closed ${what}`;
  } catch (e) {
    if (e.status !== 404) {
      showConnectionError(panel, e.message);
      return;
    }
    done = `${what[0].toUpperCase()}${what.slice(1)} was already gone`;
  }
  const next = tr.nextElementSibling || tr.previousElementSibling;
  const hadFocus = tr.contains(document.activeElement);
  tr.remove();
  const table = panel.querySelector('table.conns');
  table.hidden = table.tBodies[0].rows.length === 0;
  if (hadFocus) (next?.querySelector('button') || panel.querySelector('.load-conns')).focus();
  setText(panel.querySelector('.conn-status'), `${done}; ${connectionsCount(panel)}.`);
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
    const t = performance.now();
    for (const f of list) record(f, t);
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
  $('filter').addEventListener('input', arrange);
  for (const th of $('forwards').tHead.querySelectorAll('th[data-sort]')) {
    th.querySelector('button').addEventListener('click', () => sortBy(th.dataset.sort));
  }
  $('token-dialog').addEventListener('cancel', (ev) => ev.preventDefault());  // a token is needed to go on
  refresh();
  setInterval(refresh, 2000);
});
