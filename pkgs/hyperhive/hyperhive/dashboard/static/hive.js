// hyperhive operator console. No framework, no inline code (the CSP allows only this file).
(() => {
  'use strict';

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
  const csrf = () => ($('meta[name="csrf-token"]') || {}).content || '';

  // Bidi controls in agent text would reorder what the operator reads: show them as visible marks.
  const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
  const visible = (text) => String(text).replace(BIDI, (c) => `[U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}]`);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = visible(text);
    return e;
  }

  // --- talking to the API --------------------------------------------------------------------------------

  async function api(method, url, payload) {
    const r = await fetch(url, {
      method,
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'Accept': 'application/json', 'X-CSRF-Token': csrf() },
      body: payload === undefined ? undefined : JSON.stringify(payload),
    });
    let data = null;
    try { data = await r.json(); } catch (_) { /* not JSON */ }
    if (r.status === 401) { location.href = '/login?next=' + encodeURIComponent(location.pathname); }
    if (!r.ok) {
      const err = new Error((data && data.error && data.error.message) || `${r.status} ${r.statusText}`);
      err.status = r.status;
      throw err;
    }
    return data;
  }

  function toast(text, kind = 'ok') {
    const box = $('#toasts');
    if (!box) return;
    const t = el('div', `toast ${kind}`, text);
    box.append(t);
    setTimeout(() => t.remove(), kind === 'bad' ? 9000 : 3500);
  }

  // --- times ---------------------------------------------------------------------------------------------

  function ago(date) {
    const s = Math.round((Date.now() - date.getTime()) / 1000);
    const future = s < 0;
    const a = Math.abs(s);
    let v;
    if (a < 5) return future ? 'in a moment' : 'just now';
    if (a < 90) v = `${a}s`;
    else if (a < 5400) v = `${Math.round(a / 60)}m`;
    else if (a < 172800) v = `${Math.round(a / 3600)}h`;
    else v = `${Math.round(a / 86400)}d`;
    return future ? `in ${v}` : `${v} ago`;
  }

  // The one format of absolute times (as the server renders them): 2026-11-29 07:12:03 UTC.
  function utc(date) {
    return isNaN(date) ? '' : `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
  }

  function updateTimes(root = document) {
    for (const t of $$('time[datetime]', root)) {
      const d = new Date(t.getAttribute('datetime'));
      if (!isNaN(d)) t.textContent = ago(d);
    }
  }

  // --- forms: every form with data-api is sent with fetch (and works as a plain form without JS) ---------

  function payloadOf(form, submitter) {
    const kind = form.dataset.api;
    const fd = new FormData(form);
    if (kind === 'answer') {
      // a clicked option is the answer, whatever is typed (Enter in the text field submits with no option)
      if (submitter && submitter.name === 'choice') return { answer: submitter.value };
      const text = String(fd.get('answer') || '').trim();
      if (text) return { answer: text };
      const chosen = fd.getAll('choice').map(String);
      if (!chosen.length) throw new Error(form.dataset.multi === '1'
        ? 'tick at least one option, or write an answer' : 'write an answer, or click an option');
      return { answer: chosen };
    }
    const out = {};
    for (const [k, v] of fd.entries()) {
      if (k !== 'csrf_token' && k !== 'next' && k !== 'choice') out[k] = String(v);
    }
    if (submitter && submitter.name) out[submitter.name] = submitter.value; // ("back to the default" model: reset=1)
    return out;
  }

  function describe(path, r) {
    let m;
    if ((m = path.match(/^\/api\/questions\/(\d+)\/answer$/))) return `answered #${m[1]}: ${r.answer || ''}`;
    if ((m = path.match(/^\/api\/questions\/(\d+)\/cancel$/))) return `cancelled question #${m[1]}`;
    if (path === '/api/questions/cancel') return `cancelled ${r.cancelled} question${r.cancelled === 1 ? '' : 's'}`;
    if ((m = path.match(/^\/api\/approvals\/(\d+)\/(approve|deny)$/))) return `approval #${m[1]}: ${r.status || m[2]}`;
    if ((m = path.match(/^\/api\/agents\/([^/]+)\/model$/))) return `model of ${m[1]}: ${r.model || "the CLI's default"}`;
    if ((m = path.match(/^\/api\/reminders\/(\d+)\/cancel$/))) return `cancelled reminder #${m[1]}`;
    if (path === '/api/budget') {  // the whole limit in force now, whoever's it is
      const l = r.limit || {};
      const parts = [l.dailyUsd != null ? `$${Number(l.dailyUsd).toFixed(2)}` : '',
                     l.dailyTokens != null ? `${Number(l.dailyTokens).toLocaleString('en-US')} tokens` : ''];
      return `today's limit of ${r.agent || 'the whole hive'} is now ${parts.filter(Boolean).join(' and ') || 'none'}`;
    }
    // (a revive queues a spawn: the agent stays a tombstone until that is approved)
    if ((m = path.match(/^\/api\/agents\/([^/]+)\/revive$/))) return `revive ${m[1]} queued: approve #${r.approval_id} to bring ${m[1]} back`;
    if ((m = path.match(/^\/api\/agents\/([^/]+)\/(\w+)$/))) return `${m[2]} ${m[1]}${r.state ? ` → ${r.state}` : ''}`;
    if (path === '/api/messages') return `sent (#${r.id})`;
    if (path === '/api/inbox/read') return `marked ${r.marked} read`;
    if (path === '/api/spawn') return `spawning ${r.agent} (approval #${r.id}, approved by you): ${r.status}`;
    return 'done';
  }

  document.addEventListener('submit', async (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.api) return;
    ev.preventDefault();
    const submitter = ev.submitter;
    const url = submitter && submitter.hasAttribute('formaction') ? submitter.formAction : form.action;
    if (form.dataset.busy) return; // one request per form at a time
    const question = (submitter && submitter.dataset.confirm) || form.dataset.confirm;
    if (question && !window.confirm(question)) return;
    let payload;
    try { payload = payloadOf(form, submitter); } catch (e) { toast(e.message, 'bad'); return; }
    // Busy, not disabled: Chromium drops focus from a disabled button, and the next Tab would start at the top.
    const buttons = [...form.elements].filter((b) => b instanceof HTMLButtonElement); // (form="…" ones too)
    form.dataset.busy = '1';
    buttons.forEach((b) => b.setAttribute('aria-disabled', 'true'));
    try {
      const result = await api('POST', url, payload);
      toast(describe(url.replace(location.origin, ''), result || {}));
      if (form.dataset.reset) {
        const chosen = $$('select', form).map((s) => [s, s.value]);
        form.reset();
        chosen.forEach(([s, value]) => { s.value = value; }); // the next message goes to the same agent
        // ready for the next one: back to the first text field (the message, the spawn name)
        const field = $('textarea, input[type="text"]', form);
        if (field && form.contains(document.activeElement)) field.focus();
      }
      const card = form.closest('.card.question');
      if (card) card.classList.add('leaving');
      scheduleRefresh(0);
    } catch (e) {
      toast(e.message, 'bad');
    } finally {
      delete form.dataset.busy;
      buttons.forEach((b) => b.removeAttribute('aria-disabled'));
    }
  });

  // --- keyboard focus ----------------------------------------------------------------------------------------
  // When a refresh replaces or removes the element that has focus (a restarted agent's row, an answered card),
  // focus goes on purpose: to the same control in its new row, else to the like control of the next card (the
  // previous one when it was the last), else to the section's heading; never back to <body>.

  const FOCUSABLE = 'a[href], button, input:not([type="hidden"]), select, textarea, [tabindex]:not([tabindex="-1"])';

  // (what a closed <details> holds has client rects in Chromium, yet cannot take focus)
  function tabbable(root) {
    return $$(FOCUSABLE, root).filter((e) => !e.disabled && e.getClientRects().length
      && !e.closest('[hidden], .leaving, details:not([open]) > :not(summary)'));
  }

  function sameControl(e, sig) {
    return e.tagName === sig.tag && e.id === sig.id && e.getAttribute('name') === sig.name
      && e.getAttribute('value') === sig.value && actionOf(e) === sig.action && e.getAttribute('href') === sig.href
      && (e.getAttribute('aria-label') || '') === sig.label;
  }

  function likeControl(e, sig) {
    return e.tagName === sig.tag && e.className === sig.cls && e.getAttribute('name') === sig.name
      && (e.getAttribute('type') || '') === sig.type;
  }

  function actionOf(e) {
    const form = e.form || e.closest('form');
    return e.getAttribute('formaction') || (form && form.getAttribute('action')) || '';
  }

  function focusContext(root) {
    const active = document.activeElement;
    if (!active || active === document.body || !root.contains(active)) return null;
    const section = active.closest('section[data-key]');
    const item = active.closest('[data-key]');
    const ctx = {
      sig: { tag: active.tagName, id: active.id, name: active.getAttribute('name'), value: active.getAttribute('value'),
        action: actionOf(active), href: active.getAttribute('href'), label: active.getAttribute('aria-label') || '',
        cls: active.className, type: active.getAttribute('type') || '' },
      section: section && section.dataset.key,
      item: item && item !== section ? item.dataset.key : null,
      after: [], before: [],
    };
    if (ctx.item) {
      for (let n = item.nextElementSibling; n; n = n.nextElementSibling) if (n.dataset.key) ctx.after.push(n.dataset.key);
      for (let n = item.previousElementSibling; n; n = n.previousElementSibling) if (n.dataset.key) ctx.before.push(n.dataset.key);
    }
    return ctx;
  }

  function byKey(root, key) {
    return key ? $$('[data-key]', root).find((e) => e.dataset.key === key) : null;
  }

  function restoreFocus(root, ctx) {
    if (!ctx) return;
    const active = document.activeElement;
    if (active && active !== document.body && document.contains(active)) return; // still where it was
    const section = byKey(root, ctx.section);
    const scope = (ctx.item && byKey(section || root, ctx.item)) || (!ctx.item && section) || null;
    let target = scope && tabbable(scope).concat($$('[tabindex="-1"]', scope)).find((e) => sameControl(e, ctx.sig));
    if (!target && ctx.item && scope) {
      // the row is still there with other buttons (a killed agent offers start, a revived one "revive queued"):
      // stay in it, on what the same action left (the link in its form), else a like control, but never on a
      // danger button (a second Enter on "kill" would destroy the agent, one on "revive" purge it)
      const controls = tabbable(scope).filter((e) => !e.classList.contains('danger'));
      target = controls.find((e) => actionOf(e) === ctx.sig.action) || controls.find((e) => likeControl(e, ctx.sig))
        || controls.find((e) => e.tagName === ctx.sig.tag) || controls[0];
    }
    for (const key of ctx.after.concat(ctx.before)) {
      if (target) break;
      const next = byKey(section || root, key);
      if (!next || next.classList.contains('leaving')) continue;
      const controls = tabbable(next);
      target = controls.find((e) => likeControl(e, ctx.sig)) || controls[0];
    }
    if (!target && section) target = $('h2[tabindex="-1"], h1[tabindex="-1"]', section);
    if (!target) target = $('#main');
    if (target) target.focus();
  }

  // A region that scrolls can be scrolled from the keyboard: it takes focus and has a name (only while it scrolls,
  // so short messages add no Tab stop).
  function fitScroll(root = document) {
    for (const e of $$('[data-scroll-name]', root)) {
      const over = e.scrollHeight > e.clientHeight + 1 || e.scrollWidth > e.clientWidth + 1;
      if (over && !e.hasAttribute('tabindex')) {
        e.tabIndex = 0;
        e.setAttribute('role', 'region');
        e.setAttribute('aria-label', e.dataset.scrollName);
      } else if (!over && e.hasAttribute('tabindex') && document.activeElement !== e) {
        e.removeAttribute('tabindex');
        e.removeAttribute('role');
        e.removeAttribute('aria-label');
      }
    }
  }

  // The header is sticky and wraps on a narrow window: keep what is focused or jumped to clear of it.
  function fitHeader() {
    const top = $('header.top');
    if (top) document.documentElement.style.scrollPaddingTop = `${top.offsetHeight + 12}px`;
  }

  // Skip links focus their target (a heading with tabindex -1), so the next Tab continues from there.
  document.addEventListener('click', (ev) => {
    const a = ev.target instanceof Element && ev.target.closest('.skips a[href^="#"]');
    if (!a) return;
    const target = document.getElementById(a.getAttribute('href').slice(1));
    if (!target) return;
    ev.preventDefault();
    if (!target.hasAttribute('tabindex')) target.tabIndex = -1;
    target.focus();
    target.scrollIntoView({ block: 'start' });
  });

  // --- live sections ----------------------------------------------------------------------------------------
  // The server renders the sections; when the event stream says something changed we fetch them again and
  // replace only the keyed rows whose HTML differs, so what the operator is typing stays where it is. On / that
  // is #home (from /fragments/home); on another page, each part marked data-live (an approval, an agent's head),
  // from the page itself.

  const served = new WeakMap(); // element -> its HTML as the server last sent it

  function mark(root) {
    served.set(root, root.outerHTML);
    for (const e of $$('*', root)) {
      if (e.dataset.key || e.querySelector('[data-key]')) served.set(e, e.outerHTML);
    }
  }

  function adopt(node) {
    const n = document.importNode(node, true);
    mark(n);
    return n;
  }

  function sync(old, neu) {
    const html = neu.outerHTML;
    if (served.get(old) === html) return old;
    if (old.tagName !== neu.tagName || !neu.querySelector('[data-key]')) {
      const n = adopt(neu);
      old.replaceWith(n);
      return n;
    }
    for (const a of [...old.attributes]) if (!neu.hasAttribute(a.name)) old.removeAttribute(a.name);
    for (const a of [...neu.attributes]) if (old.getAttribute(a.name) !== a.value) old.setAttribute(a.name, a.value);
    const newKids = [...neu.children];
    const oldKids = [...old.children];
    if (newKids.length && newKids.every((c) => c.dataset.key)) {
      const byKey = new Map(oldKids.filter((c) => c.dataset.key).map((c) => [c.dataset.key, c]));
      const result = newKids.map((nc) => {
        const oc = byKey.get(nc.dataset.key);
        if (oc) { byKey.delete(nc.dataset.key); return sync(oc, nc); }
        return adopt(nc);
      });
      for (const oc of [...old.children]) if (!result.includes(oc)) oc.remove();
      result.forEach((n, i) => { if (old.children[i] !== n) old.insertBefore(n, old.children[i] || null); });
    } else if (newKids.length === oldKids.length && newKids.every((c, i) => c.tagName === oldKids[i].tagName)) {
      newKids.forEach((nc, i) => sync(oldKids[i], nc));
    } else {
      const n = adopt(neu);
      old.replaceWith(n);
      return n;
    }
    served.set(old, html);
    return old;
  }

  let refreshTimer = null;
  let refreshing = false;
  let refreshAgain = false;
  let lastRefresh = 0;

  function scheduleRefresh(delay) {
    if (!$('#home, [data-live]')) return;
    clearTimeout(refreshTimer);
    const wait = delay !== undefined ? delay : Math.max(120, 400 - (Date.now() - lastRefresh));
    refreshTimer = setTimeout(refresh, wait);
  }

  async function refresh() {
    const home = $('#home');
    const parts = home ? [home] : $$('[data-live]');
    if (!parts.length) return;
    if (refreshing) { refreshAgain = true; return; }
    refreshing = true;
    lastRefresh = Date.now();
    try {
      const src = (home ? '/fragments/home' : location.pathname) + location.search;
      const r = await fetch(src, { credentials: 'same-origin', headers: { Accept: 'text/html' } });
      if (r.status === 401) { location.href = '/login?next=' + encodeURIComponent(location.pathname); return; }
      if (!r.ok) throw new Error(`refresh failed: ${r.status}`);
      const html = await r.text();
      const doc = new DOMParser().parseFromString(home ? `<div id="home">${html}</div>` : html, 'text/html');
      const root = home || $('#main');
      const focus = focusContext(root);
      const news = [];
      for (const old of parts) {
        const neu = doc.getElementById(old.id);
        if (!neu) continue;
        const said = old.dataset.say;
        const part = sync(old, neu);
        afterRender(part);
        if (part.dataset.say && part.dataset.say !== said) news.push(part.dataset.say);
      }
      restoreFocus(root, focus);
      // a part that says what changed in it (the figures of /stats) is read out politely, not its whole HTML
      const say = $('#live-news');
      if (say && news.length) say.textContent = news.join('; ');
    } catch (e) {
      setLive('offline', 'refresh failed');
    } finally {
      refreshing = false;
      if (refreshAgain) { refreshAgain = false; scheduleRefresh(); }
    }
  }

  // Approval cards load their diff once, beside the page (a diff can be large and slow to compute).
  const diffCache = new Map();

  async function loadDiffs(root) {
    for (const holder of $$('[data-diff-src]', root)) {
      if (holder.dataset.loaded) continue;
      holder.dataset.loaded = '1';
      const src = holder.dataset.diffSrc;
      try {
        let approval = diffCache.get(src);
        if (!approval) {
          approval = await api('GET', src);
          diffCache.set(src, approval);
        }
        renderDiff(holder, approval.diff || '', 400, src.replace('/api', '').replace(/\?.*$/, ''));
        // approving approves this diff: the base it was taken against goes with the click
        const baseInput = holder.closest('.card') && $('input[name="base"]', holder.closest('.card'));
        if (baseInput) baseInput.value = approval.diff_base || '';
        if (approval.diff_truncated) {
          const cut = el('a', 'more warn', `the diff is cut (${approval.diff_chars} characters in all): read the whole diff`);
          cut.href = approval.diff_url;
          holder.append(cut);
        }
      } catch (e) {
        holder.replaceChildren(el('span', 'note bad', `diff unavailable: ${e.message}`));
      }
    }
  }

  function diffClass(line) {
    if (/^(diff --git|index |new file|deleted file|similarity|rename )/.test(line)) return 'meta';
    if (line.startsWith('+++') || line.startsWith('---')) return 'file';
    if (line.startsWith('@@')) return 'hunk';
    if (line.startsWith('+')) return 'add';
    if (line.startsWith('-')) return 'del';
    return 'ctx';
  }

  function renderDiff(holder, text, limit, wholeHref) {
    const lines = text.split('\n');
    if (lines.length && lines[lines.length - 1] === '') lines.pop();
    const pre = el('pre', 'diff');
    if (!lines.length) pre.append(el('span', 'dl meta', '(no changes)'));
    for (const line of lines.slice(0, limit)) pre.append(el('span', `dl ${diffClass(line)}`, line));
    holder.replaceChildren(pre);
    if (lines.length > limit) {
      const more = el('a', 'more', `… ${lines.length - limit} more lines: open the whole diff`);
      more.href = wholeHref;
      holder.append(more);
    }
  }

  function afterRender(root) {
    updateTimes(root);
    loadDiffs(root);
    fitScroll(root);
  }

  // --- what needs the operator: the header of every page, the tab title, opt-in notifications ---------------

  const baseTitle = document.title.replace(/^\(\d+\) /, '');
  let attentionTimer = null;
  let lastCount = null;

  function attentionCount() {
    const box = $('#attention');
    return box ? Number(box.dataset.count || 0) : 0;
  }

  function showCount() {
    const n = attentionCount();
    document.title = n > 0 ? `(${n}) ${baseTitle}` : baseTitle;
    if (lastCount !== null && n > lastCount) notifyOperator();
    lastCount = n;
  }

  function scheduleAttention(delay = 150) {
    if (!$('#attention')) return;
    clearTimeout(attentionTimer);
    attentionTimer = setTimeout(refreshAttention, delay);
  }

  async function refreshAttention() {
    try {
      const r = await fetch('/fragments/attention', { credentials: 'same-origin', headers: { Accept: 'text/html' } });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
      const fresh = doc.getElementById('attention');
      const old = $('#attention');
      if (fresh && old && fresh.outerHTML !== old.outerHTML) old.replaceWith(document.importNode(fresh, true));
      showCount();
    } catch (_) { /* the next event tries again */ }
  }

  const NOTIFY_KEY = 'hyperhive.notify';

  function notifyOn() {
    return window.Notification && Notification.permission === 'granted' && localStorage.getItem(NOTIFY_KEY) === 'on';
  }

  function notifyOperator() {
    if (!notifyOn()) return;
    const box = $('#attention');
    const text = box ? box.innerText.replace(/\s+/g, ' ').replace(/^needs you: /, '').trim() : '';
    try { new Notification('hyperhive needs you', { body: text, tag: 'hyperhive-attention' }); } catch (_) { /* ignore */ }
  }

  function initNotifyToggle() {
    const b = $('#notify-toggle');
    if (!b || !window.Notification) return;
    b.hidden = false;
    const show = () => {
      const on = notifyOn();
      b.setAttribute('aria-pressed', on ? 'true' : 'false');
      b.textContent = `notifications: ${on ? 'on' : 'off'}`;
    };
    b.addEventListener('click', async () => {
      if (notifyOn()) {
        localStorage.setItem(NOTIFY_KEY, 'off');
      } else {
        const answer = Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
        if (answer === 'granted') localStorage.setItem(NOTIFY_KEY, 'on');
        else toast('the browser refused notifications for this page', 'bad');
      }
      show();
    });
    show();
  }

  // A state event concerns a page's live part when it names the part's approval or agent (any approval may be
  // the agent's: a revive it queued, a commit it proposed), a limit of the whole hive (it may be what holds the
  // agent back), or a section of the hive the part shows (the figures of /stats: data-sections="costs" — a turn
  // recorded or a limit set by any agent).
  function concerns(d) {
    return $$('[data-live]').some((p) => (d.what === 'approval'
      && (!p.dataset.approval || Number(p.dataset.approval) === d.id))
      || (p.dataset.agent && (d.name || d.agent) === p.dataset.agent)
      || (p.dataset.agent && d.section === 'costs' && d.what === 'budget' && (!d.agent || d.agent === '*'))
      || (p.dataset.sections && d.section && p.dataset.sections.split(' ').includes(d.section)));
  }

  function connectAttention() {
    // Pages other than / have no message stream of their own: this one keeps the header and the live parts current.
    const es = new EventSource('/api/messages/stream?state=1');
    es.onmessage = () => scheduleAttention();
    es.addEventListener('state', (e) => {
      scheduleAttention();
      try { if (concerns(JSON.parse(e.data))) scheduleRefresh(); } catch (_) { /* keep going */ }
    });
    es.onopen = () => {
      setLive('live', 'live');
      scheduleAttention(0);
      scheduleRefresh(0); // catch up on what changed since the page was rendered, or while the stream was down
    };
    es.onerror = () => setLive('connecting', 'reconnecting');
  }

  // --- live message flow -----------------------------------------------------------------------------------

  function setLive(state, text) {
    const live = $('#live');
    if (!live) return;
    live.dataset.state = state;
    const t = $('.live-text', live);
    if (t) t.textContent = text || state;
  }

  function messageItem(m) {
    const li = el('li', `msg kind-${m.kind} fresh`);
    li.dataset.key = `m${m.id}`;
    const head = el('div', 'msg-head');
    head.append(el('span', 'mid', `#${m.id}`), ' ');
    const t = el('time', 't');
    t.setAttribute('datetime', m.sent_at);
    t.title = utc(new Date(m.sent_at));
    t.textContent = ago(new Date(m.sent_at));
    head.append(t, ' ', el('span', 'from', m.from), el('span', 'arrow', '→'), el('span', 'to', m.to));
    if (m.kind !== 'message') head.append(' ', el('span', 'tag', m.kind));
    if (m.in_reply_to) head.append(' ', el('span', 'dim', `↩ re #${m.in_reply_to}`));
    const body = el('pre', 'body', m.body);
    body.dataset.scrollName = `message #${m.id} in the flow`; // (as the page names it: the inbox has a copy)
    li.append(head, body);
    if (m.body_chars) {  // the stream cuts a long body; the whole is one request away
      const cut = el('p', 'note dim', `… cut: ${m.body_chars} characters in all · `);
      const whole = el('a', '', 'the whole message');
      whole.href = `/api/messages/${m.id}`;
      cut.append(whole);
      li.append(cut);
    }
    return li;
  }

  const seenMessages = new Set();

  function addToFlow(m) {
    const list = $('#flow-list');
    if (!list || seenMessages.has(m.id)) return;
    seenMessages.add(m.id);
    if ($(`[data-key="m${m.id}"]`, list)) return;
    const item = messageItem(m);
    list.prepend(item);
    fitScroll(item);
    const empty = $('#flow-empty');
    if (empty) empty.hidden = true;
    while (list.children.length > 300) list.lastElementChild.remove();
  }

  function connectMessages() {
    const list = $('#flow-list');
    const since = list ? list.dataset.since : '';
    const url = `/api/messages/stream?state=1${since && since !== '0' ? `&since=${since}` : ''}`;
    setLive('connecting', 'connecting');
    const es = new EventSource(url);
    let opened = false;
    es.onopen = () => {
      setLive('live', 'live');
      if (opened) scheduleRefresh(0); // back after a drop: catch up on what changed meanwhile
      opened = true;
    };
    es.onerror = () => setLive(es.readyState === EventSource.CLOSED ? 'offline' : 'connecting',
      es.readyState === EventSource.CLOSED ? 'offline' : 'reconnecting');
    es.onmessage = (e) => {
      try { addToFlow(JSON.parse(e.data)); } catch (_) { /* keep going */ }
      scheduleRefresh();
      scheduleAttention();
    };
    es.addEventListener('state', () => { scheduleRefresh(); scheduleAttention(); });
  }

  // --- the agent page: telemetry charts and the live turn stream -------------------------------------------

  const SVG = 'http://www.w3.org/2000/svg';
  let chartRange = 86400;

  function fmt(v) {
    if (!isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
    if (a >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
    if (Number.isInteger(v)) return String(v);
    return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toPrecision(2);
  }

  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }

  function chart(key, points, since, now) {
    const box = el('div', 'chart');
    box.dataset.key = key;
    const last = points[points.length - 1].value;
    const head = el('div', 'chart-head');
    head.append(el('span', 'key', key), el('span', 'last', fmt(last)));
    head.firstChild.title = key;
    const W = 300, H = 64, P = 3;
    const vals = points.map((p) => p.value);
    let lo = Math.min(...vals), hi = Math.max(...vals);
    if (lo > 0 && lo / (hi || 1) < 0.5) lo = 0;
    if (hi === lo) { hi += 1; lo = Math.max(0, lo - 1); }
    // Fit the time axis to the samples (a sparse series would otherwise hug one edge of a 24h axis).
    const t0 = Math.max(since, points[0].ts), t1 = Math.max(now, points[points.length - 1].ts);
    const x = (ts) => (t1 > t0 ? ((ts - t0) / (t1 - t0)) * W : W);
    const y = (v) => H - P - ((v - lo) / (hi - lo)) * (H - 2 * P);
    const svg = svgEl('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img',
      'aria-label': `${key}: ${points.length} samples, last ${fmt(last)}` });
    for (const gy of [0.25, 0.5, 0.75]) svg.append(svgEl('line', { class: 'grid', x1: 0, x2: W, y1: H * gy, y2: H * gy }));
    const pts = points.map((p) => `${x(p.ts).toFixed(1)},${y(p.value).toFixed(1)}`);
    if (points.length === 1) pts.unshift(`0,${y(points[0].value).toFixed(1)}`);
    const first = pts[0].split(',')[0];
    const lastX = pts[pts.length - 1].split(',')[0];
    svg.append(svgEl('polygon', { class: 'area', points: `${first},${H} ${pts.join(' ')} ${lastX},${H}` }));
    svg.append(svgEl('polyline', { class: 'line', points: pts.join(' ') }));
    const foot = el('div', 'chart-foot');
    const sinceText = `${utc(new Date(t0 * 1000)).slice(11, 16)} UTC`;
    foot.append(el('span', null, `since ${sinceText}`),
      el('span', null, `${fmt(Math.min(...vals))} … ${fmt(Math.max(...vals))}`));
    box.title = `${key}: ${points.length} samples since ${utc(new Date(t0 * 1000))}`;
    box.append(head, svg, foot);
    return box;
  }

  let chartsLoading = false;

  async function loadCharts() {
    const holder = $('#charts');
    if (!holder || chartsLoading) return;
    chartsLoading = true;
    const agent = holder.dataset.agent;
    const now = Date.now() / 1000;
    const since = now - chartRange;
    try {
      const rows = await api('GET', `/api/stats?agent=${encodeURIComponent(agent)}&since=${since}`);
      const byKey = new Map();
      for (const r of rows) {
        if (!byKey.has(r.key)) byKey.set(r.key, []);
        byKey.get(r.key).push(r);
      }
      const keys = [...byKey.keys()].sort((a, b) => {
        const rank = (k) => (k.startsWith('turn.') ? 0 : k.startsWith('tool.') ? 2 : 1);
        return rank(a) - rank(b) || a.localeCompare(b);
      });
      holder.replaceChildren(...keys.map((k) => chart(k, byKey.get(k), since, now)));
      if (!keys.length) holder.replaceChildren(el('p', 'empty', 'no telemetry in this range'));
    } catch (e) {
      holder.replaceChildren(el('p', 'note bad', `telemetry unavailable: ${e.message}`));
    } finally {
      chartsLoading = false;
    }
  }

  function short(v, n = 300) {
    const s = typeof v === 'string' ? v : JSON.stringify(v);
    return s && s.length > n ? `${s.slice(0, n)}…` : (s || '');
  }

  // --- the live turn view: Claude Code's stream-json, one readable line per thing that happened ------------
  // The harness publishes {type: turn_start|event|turn_end|error, data, ts}; an "event" carries one stream-json
  // event of the CLI in data.event (system init, assistant text and tool_use, user tool_result, result).

  const TURN_SHORT = 160;

  function toolArgs(input) {
    if (!input || typeof input !== 'object') return short(input, TURN_SHORT);
    return Object.entries(input).map(([k, v]) => `${k}=${short(typeof v === 'string' ? v : JSON.stringify(v), 80)}`)
      .join(' ');
  }

  function resultText(content) {
    if (typeof content === 'string') return content;
    if (Array.isArray(content)) {
      return content.map((c) => (c && c.type === 'text' ? c.text : c && c.type === 'image' ? '[image]' : short(c)))
        .join('\n');
    }
    return content === undefined || content === null ? '' : JSON.stringify(content);
  }

  const DENIAL = /permission|denied|not allowed|haven't granted|requires approval/i;

  function toolName(name) {
    const m = /^mcp__([^_]+(?:_[^_]+)*)__(.+)$/.exec(name || '');
    return m ? `${m[2]} (${m[1]})` : (name || '?');
  }

  // One line: {kind, text, full?, bad?}. `full` makes it expandable (the text is its shortened summary).
  function turnLines(item, tools) {
    const d = item.data || {};
    if (item.type === 'turn_start') {
      const msgs = Array.isArray(d.messages) ? d.messages : [];
      const from = [...new Set(msgs.map((m) => m.from))].join(', ');
      const first = msgs[0];
      const lines = [{ kind: 'turn_start', text: `▶ turn${d.turn !== undefined ? ` ${d.turn}` : ''} started${from ? ` · ${msgs.length} message${msgs.length === 1 ? '' : 's'} from ${from}` : ''}${d.pending ? ` · ${d.pending} more pending` : ''}${d.standin ? ' · stand-in model' : ''}` }];
      if (first) lines.push({ kind: 'wake', text: `✉ #${first.id} ${first.from}: ${short(first.body, TURN_SHORT)}`, full: first.body.length > TURN_SHORT ? first.body : null });
      return lines;
    }
    if (item.type === 'turn_end') {
      const ok = d.ok !== false && (d.exit_status === undefined || d.exit_status === 0);
      const parts = [`■ turn${d.turn !== undefined ? ` ${d.turn}` : ''} ended`, ok ? 'ok' : `failed (exit ${d.exit_status})`];
      if (d.duration_s !== undefined) parts.push(`${fmt(d.duration_s)} s`);
      if (d.tool_calls !== undefined) parts.push(`${d.tool_calls} tool call${d.tool_calls === 1 ? '' : 's'}`);
      if (d.retried) parts.push('retried after compaction');
      return [{ kind: 'turn_end', text: parts.join(' · '), bad: !ok }];
    }
    if (item.type === 'error') {
      const why = d.reason || d.message || short(d, TURN_SHORT);
      const retry = d.retry_in_seconds !== undefined ? ` · its messages come again in ${fmt(d.retry_in_seconds)} s` : '';
      return [{ kind: 'error', text: `✗ turn failed: ${why}${retry}`, full: d.stderr || null, bad: true }];
    }
    const e = d.event && typeof d.event === 'object' ? d.event : d;
    if (e.truncated) return [{ kind: 'event', text: `(a ${e.type || ''} event too large to show whole)`, full: e.preview }];
    if (e.type === 'system') {
      if (e.subtype === 'init') {
        const n = Array.isArray(e.tools) ? e.tools.length : 0;
        return [{ kind: 'system', text: `session ${e.subtype}${e.model ? ` · model ${e.model}` : ''}${n ? ` · ${n} tools` : ''}${e.permissionMode ? ` · permissions ${e.permissionMode}` : ''}` }];
      }
      const rest = { ...e };
      for (const k of ['type', 'subtype', 'session_id', 'uuid']) delete rest[k];
      const denied = /denied/.test(e.subtype || '');
      if (denied && e.tool_name) {
        return [{ kind: 'denied', text: `✗ permission denied: ${toolName(e.tool_name)}${e.decision_reason_type ? ` (${e.decision_reason_type})` : ''}`, full: e.message || null, bad: true }];
      }
      return [{ kind: denied ? 'denied' : 'system', text: `${denied ? '✗ ' : ''}system: ${(e.subtype || '').replace(/_/g, ' ')} ${short(toolArgs(rest), TURN_SHORT)}`.trim(), bad: denied }];
    }
    if (e.type === 'hyperhive') {
      const rest = { ...e };
      delete rest.type; delete rest.subtype;
      return [{ kind: 'system', text: `hyperhive: ${(e.subtype || '').replace(/_/g, ' ')} ${toolArgs(rest)}` }];
    }
    const content = e.message && Array.isArray(e.message.content) ? e.message.content : null;
    if ((e.type === 'assistant' || e.type === 'user') && content) {
      const out = [];
      for (const c of content) {
        if (!c || typeof c !== 'object') continue;
        if (c.type === 'text' && e.type === 'assistant') {
          out.push({ kind: 'text', text: c.text, full: null });
        } else if (c.type === 'thinking') {
          out.push({ kind: 'thinking', text: `… ${short(c.thinking, TURN_SHORT)}`, full: c.thinking });
        } else if (c.type === 'tool_use') {
          tools.set(c.id, c);
          const args = toolArgs(c.input);
          const whole = JSON.stringify(c.input, null, 2);
          out.push({ kind: 'tool_use', text: `⚙ ${toolName(c.name)} ${short(args, TURN_SHORT)}`, full: args.length > TURN_SHORT ? whole : null });
        } else if (c.type === 'tool_result') {
          const call = tools.get(c.tool_use_id);
          const name = call ? toolName(call.name) : 'tool';
          const text = resultText(c.content);
          const denied = c.is_error && DENIAL.test(text);
          const mark = denied ? '✗ DENIED' : c.is_error ? '✗ error' : '↳';
          const oneLine = text.replace(/\s+/g, ' ').trim();
          out.push({ kind: denied ? 'denied' : 'tool_result', text: `${mark} ${name}: ${short(oneLine, TURN_SHORT)}`,
            full: oneLine.length > TURN_SHORT || text.includes('\n') ? text : null, bad: !!c.is_error });
        }
      }
      return out;
    }
    if (e.type === 'result') {
      const parts = [`result: ${e.subtype || (e.is_error ? 'error' : 'done')}`];
      if (e.num_turns !== undefined) parts.push(`${e.num_turns} model turn${e.num_turns === 1 ? '' : 's'}`);
      if (e.duration_ms !== undefined) parts.push(`${fmt(e.duration_ms / 1000)} s`);
      if (e.total_cost_usd !== undefined) parts.push(`$${Number(e.total_cost_usd).toFixed(4)}`);
      const out = [{ kind: 'result', text: parts.join(' · '), full: typeof e.result === 'string' && e.result ? e.result : null, bad: !!e.is_error }];
      for (const p of Array.isArray(e.permission_denials) ? e.permission_denials : []) {
        out.push({ kind: 'denied', text: `✗ permission denied: ${toolName(p.tool_name)} ${short(toolArgs(p.tool_input), TURN_SHORT)}`, bad: true });
      }
      return out;
    }
    return [{ kind: 'event', text: `${e.type || 'event'}${e.subtype ? ` ${e.subtype}` : ''}`, full: JSON.stringify(e, null, 2) }];
  }

  function turnItem(item, line) {
    const li = el('li', `turn-item ${line.kind}${line.bad ? ' bad' : ''}`);
    li.dataset.kind = line.kind;
    const when = item.ts ? new Date(typeof item.ts === 'number' ? item.ts * 1000 : item.ts) : null;
    const ts = el('time', 'ts', when ? when.toISOString().slice(11, 19) : '');
    if (when) { ts.setAttribute('datetime', when.toISOString()); ts.title = utc(when); }
    if (line.full) {
      const det = el('details', 'more');
      det.append(el('summary', 'line', line.text), el('pre', 'full', line.full));
      li.append(ts, det);
    } else {
      li.append(ts, el('pre', 'line', line.text));
    }
    return li;
  }

  function connectTurns() {
    const list = $('#turn-list');
    if (!list || list.dataset.off) return;
    const agent = list.dataset.agent;
    const es = new EventSource(`/api/agents/${encodeURIComponent(agent)}/turns/stream`);
    es.onopen = () => setLive('live', 'live');
    es.onerror = () => setLive('connecting', 'reconnecting');
    const tools = new Map();
    let redraw = null;
    es.onmessage = (e) => {
      let item;
      try { item = JSON.parse(e.data); } catch (_) { return; }
      $('#turns-empty').hidden = true;
      const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
      for (const line of turnLines(item, tools)) list.append(turnItem(item, line));
      while (list.children.length > 600) list.firstElementChild.remove();
      if (atBottom) list.scrollTop = list.scrollHeight;
      if (item.type === 'turn_end') { clearTimeout(redraw); redraw = setTimeout(loadCharts, 500); }
    };
  }

  function initAgentPage() {
    for (const b of $$('[data-range]')) {
      b.addEventListener('click', () => {
        chartRange = Number(b.dataset.range);
        $$('[data-range]').forEach((x) => {
          x.classList.toggle('on', x === b);
          x.setAttribute('aria-pressed', String(x === b));
        });
        loadCharts();
      });
    }
    const raw = $('#rawfile');
    if (raw) {
      raw.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const rev = raw.elements.rev.value.trim() || 'main';
        const path = raw.elements.path.value.trim().replace(/^\/+/, '');
        if (!path) { toast('name a file', 'bad'); return; }
        const enc = (s) => s.split('/').map(encodeURIComponent).join('/');
        window.open(`/api/agents/${encodeURIComponent(raw.dataset.agent)}/repo/file/${enc(rev)}/${enc(path)}`, '_blank', 'noopener');
      });
    }
    loadCharts();
    connectTurns();
    setInterval(loadCharts, 60000);
  }

  // --- the spawn form: say what is wrong with a name as it is typed (nothing is cut) --------------------------

  const RESERVED = ['manager', 'operator', 'system', 'hive']; // config.RESERVED_NAMES

  function nameProblem(name) {
    if (!name) return '';
    if (name.length > 9) return `"${name}" is ${name.length} characters: a name has at most 9`;
    if (!/^[a-z]/.test(name)) return 'a name starts with a lowercase letter';
    if (!/^[a-z][a-z0-9-]*$/.test(name)) return 'a name has only lowercase letters, digits and "-"';
    if (name.endsWith('-')) return 'a name ends with a letter or digit';
    if (RESERVED.includes(name)) return `"${name}" is reserved`;
    return '';
  }

  document.addEventListener('input', (ev) => {
    const field = ev.target;
    if (!(field instanceof HTMLInputElement) || field.id !== 'spawn-name') return;
    const problem = nameProblem(field.value.trim());
    field.setCustomValidity(problem);
    const say = $('#spawn-name-problem');
    if (say) say.textContent = problem;
  });

  // --- start -----------------------------------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    const page = document.body.dataset.page;
    const root = $('#home');
    // before anything rewrites the server's HTML (relative times)
    for (const part of root ? [root] : $$('[data-live]')) mark(part);
    updateTimes();
    fitScroll();
    fitHeader();
    setInterval(() => updateTimes(), 15000);
    showCount();
    initNotifyToggle();
    if ($('#attention') && page !== 'home') connectAttention();
    if ($('#attention')) setInterval(() => scheduleAttention(), 30000); // stuck is a matter of time too
    let resized = null;
    window.addEventListener('resize', () => { clearTimeout(resized); resized = setTimeout(() => { fitScroll(); fitHeader(); }, 200); });
    if (page === 'home') {
      for (const li of $$('#flow-list > li')) seenMessages.add(Number(li.dataset.key.slice(1)));
      afterRender(root);
      connectMessages();
      setInterval(() => scheduleRefresh(), 20000); // agent states change without messages too
    } else if (page === 'agent') {
      initAgentPage();
    }
  });
})();
