// The chat page of `tandem serve`: conversations in localStorage, replies streamed from
// /v1/chat/completions (server-sent events) and shown as Markdown sanitised by DOMPurify.
'use strict';

const KEY_CONVERSATIONS = 'tandem.conversations.v1';
const KEY_CURRENT = 'tandem.current.v1';
const KEY_SETTINGS = 'tandem.settings.v1';
const SETTING_FIELDS = ['system', 'temperature', 'top_p', 'max_tokens', 'seed', 'api_key'];

const $ = (id) => document.getElementById(id);
let conversations = [];
let currentId = null;
let running = null;   // {controller} while a reply streams
let placement = '';   // where the model's layers run, from /props

marked.setOptions({ gfm: true, breaks: true });

// Markdown to HTML that cannot run script: marked renders, DOMPurify removes what is unsafe
// (event handlers, javascript: URLs, <script>, ...), whoever wrote the text.
function renderMarkdown(text) {
  return DOMPurify.sanitize(marked.parse(text || ''));
}

// ---- storage --------------------------------------------------------------------------------

function loadState() {
  try { conversations = JSON.parse(localStorage.getItem(KEY_CONVERSATIONS)) || []; }
  catch { conversations = []; }
  currentId = localStorage.getItem(KEY_CURRENT);
  if (!conversations.some((c) => c.id === currentId)) currentId = conversations[0]?.id ?? null;
  let settings = {};
  try { settings = JSON.parse(localStorage.getItem(KEY_SETTINGS)) || {}; } catch { settings = {}; }
  for (const f of SETTING_FIELDS) if (settings[f] !== undefined) $(f).value = settings[f];
}

function saveState() {
  localStorage.setItem(KEY_CONVERSATIONS, JSON.stringify(conversations));
  localStorage.setItem(KEY_CURRENT, currentId || '');
}

function saveSettings() {
  const settings = {};
  for (const f of SETTING_FIELDS) settings[f] = $(f).value;
  localStorage.setItem(KEY_SETTINGS, JSON.stringify(settings));
}

function current() { return conversations.find((c) => c.id === currentId) || null; }

function newConversation() {
  const c = { id: `c${Date.now()}${Math.random().toString(36).slice(2, 7)}`, title: 'New chat', messages: [] };
  conversations.unshift(c);
  currentId = c.id;
  saveState();
  return c;
}

// ---- rendering ------------------------------------------------------------------------------

function renderList() {
  const ul = $('conversations');
  ul.replaceChildren();
  for (const c of conversations) {
    const li = document.createElement('li');
    li.className = c.id === currentId ? 'active' : '';
    li.dataset.id = c.id;
    const title = document.createElement('span');
    title.className = 'title';
    title.textContent = c.title;
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'delete';
    del.title = 'Delete this conversation';
    del.textContent = '×';
    del.addEventListener('click', (e) => { e.stopPropagation(); deleteConversation(c.id); });
    li.append(title, del);
    li.addEventListener('click', () => { if (!running) { currentId = c.id; saveState(); renderAll(); } });
    ul.append(li);
  }
}

function messageElement(m) {
  const div = document.createElement('div');
  div.className = `msg ${m.role}` + (m.stopped ? ' stopped' : '') + (m.error ? ' error' : '');
  const role = document.createElement('div');
  role.className = 'role';
  role.textContent = m.role;
  const content = document.createElement('div');
  content.className = 'content';
  content.innerHTML = m.error ? '' : renderMarkdown(m.content);
  if (m.error) content.textContent = m.error;
  div.append(role, content);
  return div;
}

function renderMessages() {
  const box = $('messages');
  box.replaceChildren(...(current()?.messages || []).map(messageElement));
  box.scrollTop = box.scrollHeight;
}

function renderAll() {
  renderList();
  renderMessages();
  updateButtons();
}

function updateButtons() {
  const c = current();
  $('send').hidden = !!running;
  $('stop').hidden = !running;
  $('regenerate').disabled = !!running || !c || !c.messages.some((m) => m.role === 'user');
  $('new-chat').disabled = !!running;
}

function setStatus(text) { $('status').textContent = text; }

function deleteConversation(id) {
  if (running) return;
  conversations = conversations.filter((c) => c.id !== id);
  if (currentId === id) currentId = conversations[0]?.id ?? null;
  saveState();
  renderAll();
}

// ---- talking to the server ------------------------------------------------------------------

function headers() {
  const h = { 'Content-Type': 'application/json' };
  const key = $('api_key').value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function requestBody(c) {
  const messages = [];
  const system = $('system').value.trim();
  if (system) messages.push({ role: 'system', content: system });
  for (const m of c.messages) if (!m.error) messages.push({ role: m.role, content: m.content });
  const body = { model: 'tandem', messages, stream: true, stream_options: { include_usage: true } };
  const num = (id) => { const v = $(id).value.trim(); return v === '' ? undefined : Number(v); };
  if (num('temperature') !== undefined) body.temperature = num('temperature');
  if (num('top_p') !== undefined) body.top_p = num('top_p');
  if (num('max_tokens') !== undefined) body.max_tokens = Math.max(1, Math.round(num('max_tokens')));
  if (num('seed') !== undefined) body.seed = Math.round(num('seed'));
  return body;
}

// Reads server-sent events from a fetch response, calling onEvent with each JSON object.
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        if (data === '[DONE]') return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

function describe(usage, timings, finish) {
  const parts = [];
  if (usage) {
    const cached = usage.prompt_tokens_details?.cached_tokens ?? 0;
    let p = `prompt: ${usage.prompt_tokens} tokens (${cached} cached)`;
    if (timings && timings.prompt_n > 0) p += `, ${timings.prompt_per_second.toFixed(1)} tokens/s`;
    parts.push(p);
    let g = `generation: ${usage.completion_tokens} tokens`;
    if (timings) g += `, ${timings.predicted_per_second.toFixed(1)} tokens/s`;
    parts.push(g);
  }
  if (finish) parts.push(`finish: ${finish}`);
  if (placement) parts.push(placement);
  return parts.join(' · ');
}

// Streams a reply to conversation c into a new assistant message.
async function generate(c) {
  const msg = { role: 'assistant', content: '' };
  const body = requestBody(c);
  c.messages.push(msg);
  saveState();
  renderMessages();
  const el = $('messages').lastElementChild;
  const content = el.querySelector('.content');
  const controller = new AbortController();
  running = { controller };
  updateButtons();
  setStatus('waiting for the model…');

  let usage = null, timings = null, finish = null, pieces = 0, scheduled = false;
  let firstAt = null;
  const paint = () => {
    scheduled = false;
    content.innerHTML = renderMarkdown(msg.content);
    $('messages').scrollTop = $('messages').scrollHeight;
  };
  try {
    const res = await fetch('v1/chat/completions', {
      method: 'POST', headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!res.ok) {
      const err = await res.json().catch(() => null);
      throw new Error(err?.error?.message || `the server answered HTTP ${res.status}`);
    }
    await readEvents(res, (j) => {
      if (j.error) throw new Error(j.error.message);
      if (j.usage) usage = j.usage;
      if (j.timings) timings = j.timings;
      const choice = j.choices?.[0];
      if (!choice) return;
      if (choice.finish_reason) finish = choice.finish_reason;
      const piece = choice.delta?.content;
      if (piece) {
        if (firstAt === null) firstAt = performance.now();
        msg.content += piece;
        pieces += 1;
        if (!scheduled) { scheduled = true; requestAnimationFrame(paint); }
        if (pieces % 16 === 0) setStatus(`generating… ${pieces} pieces`);
      }
    });
    setStatus(describe(usage, timings, finish));
  } catch (e) {
    if (e.name === 'AbortError') {
      msg.stopped = true;
      const secs = firstAt === null ? 0 : (performance.now() - firstAt) / 1000;
      setStatus(`stopped after ${pieces} pieces` +
                (secs > 0 ? ` (${(pieces / secs).toFixed(1)} pieces/s)` : '') +
                (placement ? ` · ${placement}` : ''));
    } else {
      msg.error = `error: ${e.message}`;
      setStatus(msg.error);
    }
  } finally {
    running = null;
    saveState();
    renderMessages();
    updateButtons();
  }
}

async function send() {
  if (running) return;
  const text = $('input').value;
  if (!text.trim()) return;
  const c = current() || newConversation();
  if (c.title === 'New chat') c.title = text.trim().split('\n')[0].slice(0, 48);
  c.messages.push({ role: 'user', content: text });
  $('input').value = '';
  saveState();
  renderAll();
  await generate(c);
}

async function regenerate() {
  const c = current();
  if (running || !c) return;
  while (c.messages.length && c.messages[c.messages.length - 1].role !== 'user') c.messages.pop();
  if (!c.messages.length) return;
  saveState();
  renderAll();
  await generate(c);
}

async function loadModelInfo() {
  try {
    const res = await fetch('props', { headers: headers() });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const p = await res.json();
    const pl = p.placement;
    placement = `layers: ${pl.cpu_layers} CPU, ${pl.gpu_resident_layers} GPU, ` +
                `${pl.gpu_streamed_layers} streamed; output head on ${pl.output_on_gpu ? 'GPU' : 'CPU'}`;
    $('model-info').textContent = `${p.model}\ncontext ${p.n_ctx} tokens, ${p.total_slots} session(s)\n${placement}`;
  } catch (e) {
    $('model-info').textContent = `model info unavailable (${e.message}); set the API key if the server has one`;
  }
}

// ---- wiring ---------------------------------------------------------------------------------

$('composer').addEventListener('submit', (e) => { e.preventDefault(); send(); });
$('input').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
});
$('stop').addEventListener('click', () => running?.controller.abort());
$('regenerate').addEventListener('click', regenerate);
$('new-chat').addEventListener('click', () => { if (!running) { newConversation(); renderAll(); $('input').focus(); } });
for (const f of SETTING_FIELDS) $(f).addEventListener('change', saveSettings);
$('api_key').addEventListener('change', loadModelInfo);

loadState();
renderAll();
loadModelInfo();
