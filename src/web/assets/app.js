// dockwatch web: the containers of this host and their logs.
//
// Log lines are untrusted: they are only ever set as text (textContent), never as markup.
// The page keeps at most MAX_ROWS rows: live lines push the oldest out (scrolling up
// fetches them again, a page at a time, from the server); scrolling back past MAX_ROWS
// pauses the live view instead of growing.
'use strict';

const MAX_ROWS = 5000;
const PAGE = 500;

const $ = (sel) => document.querySelector(sel);
const state = {
  id: null,
  older: null, // where the page further back ends (null: the first line is shown)
  stop: null, // why there is nothing further back
  es: null,
  live: false,
  ended: false,
  loading: false,
  utc: true,
  filter: '',
  shown: 0,
};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error((await r.text()) || r.statusText);
  return r.json();
}

function status(text) {
  $('#status').textContent = text;
}

function timeText(l) {
  if (state.utc) return l.t.slice(0, 23).replace('T', ' ');
  const d = new Date(l.ms);
  const pad = (n, w) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1, 2)}-${pad(d.getDate(), 2)} ` +
    `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.${pad(d.getMilliseconds(), 3)}`;
}

const LEVEL = /\b(ERROR|ERR|FATAL|PANIC|WARN|WARNING)\b/i;

function row(l) {
  const r = el('div', 'row ' + l.s);
  r.dataset.b = l.b || '';
  r.dataset.t = l.t;
  r.dataset.ms = l.ms;
  const ts = el('span', 'ts', timeText(l));
  const text = el('span', 'text', l.text);
  const m = LEVEL.exec(l.text);
  if (m) text.classList.add(/^w/i.test(m[1]) ? 'lvl-warn' : 'lvl-error');
  r.append(ts, text);
  if (state.filter && !l.text.includes(state.filter)) r.classList.add('hidden');
  return r;
}

function mark(text) {
  return el('div', 'mark', text);
}

function rows() {
  return $('#log').querySelectorAll('.row');
}

function atBottom() {
  const log = $('#log');
  return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
}

function updateStatus() {
  const n = rows().length;
  const mode = state.live ? 'live' : state.ended ? 'the container stopped' : 'paused';
  status(`${n} line${n === 1 ? '' : 's'} shown · ${mode}`);
}

function startMark() {
  const why = {
    start: 'the first line the engine has',
    compressed: 'older lines are in a compressed rotated file',
    rotated: 'this position rotated away',
    endpoint: 'only the last lines (the engine\'s log files are not readable here)',
  }[state.stop];
  return why ? mark('— ' + why + ' —') : null;
}

// Live lines at the bottom; the oldest rows leave when there are too many.
function append(lines) {
  const log = $('#log');
  const follow = atBottom();
  const frag = document.createDocumentFragment();
  for (const l of lines) frag.append(row(l));
  log.append(frag);
  const all = rows();
  const extra = all.length - MAX_ROWS;
  if (extra > 0) {
    for (let i = 0; i < extra; i++) all[i].remove();
    const first = rows()[0];
    state.older = first ? first.dataset.b || null : null;
    state.stop = null;
    const m = log.querySelector('.mark.start');
    if (m) m.remove();
  }
  if (follow) log.scrollTop = log.scrollHeight;
  updateStatus();
}

// An older page at the top, the view kept where it was.
async function loadOlder() {
  if (!state.older || state.loading) return;
  state.loading = true;
  const id = state.id;
  try {
    const page = await getJSON(`/api/logs/${id}?limit=${PAGE}&before=${encodeURIComponent(state.older)}`);
    if (state.id !== id) return;
    const log = $('#log');
    const height = log.scrollHeight;
    const frag = document.createDocumentFragment();
    state.older = page.older;
    state.stop = page.stop;
    const m = startMark();
    if (m) {
      m.classList.add('start');
      frag.append(m);
    }
    for (const l of page.lines) frag.append(row(l));
    log.prepend(frag);
    log.scrollTop += log.scrollHeight - height;
    const all = rows();
    const extra = all.length - MAX_ROWS;
    if (extra > 0) {
      // Too far back to keep the live end too: the live view pauses.
      for (let i = all.length - extra; i < all.length; i++) all[i].remove();
      pause(`${extra} newer lines left the page`);
    }
    updateStatus();
  } catch (e) {
    status(String(e.message || e));
  } finally {
    state.loading = false;
  }
}

function pause(why) {
  if (state.es) state.es.close();
  state.es = null;
  state.live = false;
  $('#bar-text').textContent = 'Live view paused: ' + why + '.';
  $('#bar').hidden = false;
}

function follow(page) {
  const q = [
    page.after && `after=${encodeURIComponent(page.after)}`,
    page.since && `since=${encodeURIComponent(page.since)}`,
  ].filter(Boolean).join('&');
  const es = new EventSource(`/api/follow/${state.id}?${q}`);
  state.es = es;
  state.live = true;
  es.addEventListener('lines', (ev) => append(JSON.parse(ev.data)));
  es.addEventListener('gap', (ev) => {
    $('#log').append(mark('— ' + ev.data + ' —'));
  });
  es.addEventListener('failure', (ev) => {
    $('#log').append(mark('— ' + ev.data + ' —'));
  });
  // The container stopped and everything it wrote is shown: no reconnecting.
  es.addEventListener('end', () => {
    es.close();
    if (state.es === es) {
      state.es = null;
      state.live = false;
      state.ended = true;
      $('#log').append(mark('— the container stopped —'));
      updateStatus();
    }
  });
}

// The whole log searched on the server; matches arrive as they are found.
function runSearch() {
  const q = $('#search').value;
  if (!state.id || !q) return;
  if (state.es) state.es.close();
  state.live = false;
  const log = $('#log');
  log.replaceChildren(mark(`— searching the whole log for “${q}” —`));
  const re = $('#regex').checked ? '&regex=1' : '';
  history.replaceState(null, '', `#c=${state.id}&q=${encodeURIComponent(q)}${re ? '&regex=1' : ''}`);
  const es = new EventSource(`/api/search/${state.id}?q=${encodeURIComponent(q)}${re}&i=1`);
  state.es = es;
  const show = (p, done) => {
    const what = done ? (p.truncated ? ' (stopped at the limit of matches)' : ' — the whole log') : ' — searching…';
    $('#bar-text').textContent = `Search “${q}”: ${p.matches} match${p.matches === 1 ? '' : 'es'} in ${p.scanned} lines${what}`;
    $('#to-end').textContent = 'Back to the log';
    $('#bar').hidden = false;
  };
  es.addEventListener('lines', (ev) => {
    const frag = document.createDocumentFragment();
    for (const l of JSON.parse(ev.data)) frag.append(row(l));
    log.append(frag);
  });
  es.addEventListener('progress', (ev) => show(JSON.parse(ev.data), false));
  es.addEventListener('end', (ev) => {
    es.close();
    show(JSON.parse(ev.data), true);
    status(`${rows().length} matches shown`);
  });
  es.addEventListener('failure', (ev) => {
    es.close();
    log.append(mark('— ' + ev.data + ' —'));
  });
}

async function select(id) {
  if (state.es) state.es.close();
  $('#to-end').textContent = 'Jump to the end';
  const dl = $('#download');
  dl.href = `/api/download/${id}`;
  dl.hidden = false;
  Object.assign(state, { id, older: null, stop: null, es: null, live: false, ended: false, loading: false });
  $('#bar').hidden = true;
  for (const li of document.querySelectorAll('nav li')) {
    li.classList.toggle('selected', li.dataset.id === id);
  }
  history.replaceState(null, '', '#c=' + id);
  const log = $('#log');
  log.replaceChildren(mark('loading…'));
  try {
    const page = await getJSON(`/api/logs/${id}?limit=${PAGE}`);
    if (state.id !== id) return;
    state.older = page.older;
    state.stop = page.stop;
    log.replaceChildren();
    const m = startMark();
    if (m) {
      m.classList.add('start');
      log.append(m);
    }
    append(page.lines);
    log.scrollTop = log.scrollHeight;
    follow(page);
    updateStatus();
  } catch (e) {
    log.replaceChildren(mark(String(e.message || e)));
  }
}

async function loadContainers() {
  try {
    const list = await getJSON('/api/containers');
    const ul = $('#containers');
    ul.replaceChildren();
    for (const c of list) {
      const li = el('li', 'container ' + c.state);
      li.dataset.id = c.id;
      li.classList.toggle('selected', c.id === state.id);
      li.append(el('span', 'name', c.name || c.id.slice(0, 12)), el('span', 'meta', `${c.image} · ${c.status}`));
      li.addEventListener('click', () => select(c.id));
      ul.append(li);
    }
    if (!state.id) {
      const h = new URLSearchParams(location.hash.slice(1));
      const c = h.get('c');
      const pick = c && /^[0-9a-f]{6,64}$/.test(c) && list.find((x) => x.id.startsWith(c));
      if (pick) {
        await select(pick.id);
        if (h.get('q')) {
          $('#search').value = h.get('q');
          $('#regex').checked = h.get('regex') === '1';
          runSearch();
        }
      }
    }
  } catch (e) {
    status(String(e.message || e));
  }
}

function applyFilter() {
  state.filter = $('#filter').value;
  for (const r of rows()) {
    r.classList.toggle('hidden', !!state.filter && !r.querySelector('.text').textContent.includes(state.filter));
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('#filter').addEventListener('input', applyFilter);
  $('#search').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') runSearch();
  });
  $('#utc').addEventListener('change', () => {
    state.utc = $('#utc').checked;
    for (const r of rows()) {
      r.querySelector('.ts').textContent = timeText({ t: r.dataset.t, ms: Number(r.dataset.ms) });
    }
  });
  $('#log').addEventListener('scroll', () => {
    if ($('#log').scrollTop < 200) loadOlder();
  });
  $('#to-end').addEventListener('click', () => state.id && select(state.id));
  loadContainers();
  setInterval(loadContainers, 5000);
});
