// Spotter's offline-first client: one dependency-free ES module, served by the ingress at
// GET /api/v1/client/spotter.js. Events are written to IndexedDB before `send` resolves, flushed
// in order in batches, retried with backoff while the network or the broker is away, and followed
// until their receipt says applied or rejected. See docs/client.md.

export const API_VERSION = 'v1';
export const EVENTS_PATH = `/api/${API_VERSION}/notify/events`;
export const RECEIPTS_PATH = `/api/${API_VERSION}/receipts`;
export const INBOX_PATH = `/api/${API_VERSION}/inbox`;
export const DEFAULT_MAX_BATCH_EVENTS = 100; // the ingress's MAX_BATCH_EVENTS default
// Answered on the query path (they carry a passcode): always posted alone (x-delivery: query).
export const QUERY_EVENT_TYPES = Object.freeze(['feed.access.attempt', 'feed.visibility.updated']);
// Answers about the event itself, which no re-send can change: kept as rejected, never retried.
// Anything else (408, 429, 5xx, a 404 from a proxy mid-deploy, no network) is retried.
const FINAL_STATUSES = new Set([400, 403, 413, 415, 422]);
const STATE_INDEX = 'state_seq';

/** Milliseconds to wait after the n-th failed attempt (n = 1, 2, …): 2, 4, 8, 16, 32 s by
 * default, capped, plus up to 10 % jitter so a fleet of phones coming back online does not
 * retry in step; never sooner than the server's Retry-After. */
export function retryDelayMs(failures, { baseMs = 2000, capMs = 60000 } = {}, retryAfterMs = 0,
  random = Math.random) {
  const nominal = Math.min(capMs, baseMs * 2 ** Math.max(0, failures - 1));
  return Math.max(Math.min(capMs, nominal * (1 + 0.1 * random())), retryAfterMs || 0);
}

/** Retry-After as milliseconds (delta-seconds or an HTTP date), or 0. */
export function parseRetryAfter(value, now = Date.now()) {
  if (!value) return 0;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? 0 : Math.max(0, at - now);
}

/** What an HTTP answer to a batch means for its events. */
export function classify(status) {
  if (status === 200 || status === 202) return 'sent';
  if (status === 401) return 'unauthorized';
  return FINAL_STATUSES.has(status) ? 'rejected' : 'retry';
}

export class SpotterError extends Error {
  constructor(status, body, retryable) {
    super((body && (body.detail || body.error)) || (status ? `HTTP ${status}` : 'network error'));
    this.name = 'SpotterError';
    Object.assign(this, { status, body, retryable });
  }
}

export class SpotterClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.baseUrl the ingress, e.g. "https://api.spotter.app"
   * @param {(o: {forceRefresh: boolean}) => Promise<string>|string} options.getToken a bearer token
   * @param {string} options.userId the token's subject: every event is sent as this user
   */
  constructor({
    baseUrl, getToken, userId, sourceService = 'web', schemaVersion = '1.0.0',
    maxBatchEvents = DEFAULT_MAX_BATCH_EVENTS, retryBaseMs = 2000, retryCapMs = 60000, maxRetries = 5,
    flushIntervalMs = 15000, receiptIntervalMs = 2000, receiptMaxIntervalMs = 30000,
    inbox = true, inboxWaitS = 25, dbName, fetch: fetchImpl, indexedDB: idb, IDBKeyRange: keyRange,
  } = {}) {
    super();
    if (!baseUrl || typeof getToken !== 'function' || !userId) {
      throw new TypeError('SpotterClient needs {baseUrl, getToken, userId}');
    }
    this.baseUrl = String(baseUrl).replace(/\/+$/, '');
    this.userId = String(userId).toLowerCase();
    Object.assign(this, { sourceService, schemaVersion, maxBatchEvents, maxRetries, inboxWaitS });
    this._getToken = getToken;
    this._backoff = { baseMs: retryBaseMs, capMs: retryCapMs };
    this._intervals = { flush: flushIntervalMs, receipt: receiptIntervalMs, receiptMax: receiptMaxIntervalMs };
    this._fetch = fetchImpl || globalThis.fetch.bind(globalThis);
    this._store = new Outbox(idb || globalThis.indexedDB, keyRange || globalThis.IDBKeyRange,
      dbName || `spotter-${this.userId}`);
    this._batchLimit = maxBatchEvents;
    this.paused = false;
    this._closed = false;
    this._timers = new Set();
    this._flushing = null;
    this._flushAgain = false;
    this._flushTimer = null;
    this._receiptDelay = receiptIntervalMs;
    this._receiptTimer = null;
    this._inboxOn = inbox;
    this._inboxAbort = null;
    this._listen();
    // a new start is a fresh chance for what got stuck before (as is the next `online`)
    this._later(0, () => { this.retry(); this._scheduleReceipts(0); this._syncInbox(); });
    this._every(flushIntervalMs, () => this.flush());
  }

  // ---- the app's API -------------------------------------------------------------------------

  /** Queue an event; resolves with its client_generated_id once it is on disk. */
  async send(eventType, data = {}) {
    const envelope = this._envelope(eventType, data);
    await this._store.add(envelope);
    this._changed();
    this.flush();
    return envelope.client_generated_id;
  }

  /** Post an event now, alone, and resolve with the worker's answer (request–reply and query
   * events: an upload form, a feed access token). Nothing is stored: a passcode never reaches
   * IndexedDB. Rejects with a SpotterError (status, body, retryable). */
  async request(eventType, data = {}) {
    const envelope = this._envelope(eventType, data);
    const answer = await this._call('POST', EVENTS_PATH, envelope);
    if (answer.status === 200 || answer.status === 202) {
      return answer.body && 'result' in answer.body
        ? answer.body.result : { pending: true, id: envelope.client_generated_id };
    }
    throw new SpotterError(answer.status, answer.body, classify(answer.status) === 'retry');
  }

  /** Events not yet applied: queued, stuck and rejected (and sent, awaiting their receipt, with
   * {includeSent: true}), oldest first. */
  async pending({ includeSent = false } = {}) {
    const states = includeSent ? ['queued', 'stuck', 'sent', 'rejected'] : ['queued', 'stuck', 'rejected'];
    const records = (await Promise.all(states.map((s) => this._store.inState(s)))).flat();
    return records.sort((a, b) => a.seq - b.seq).map(view);
  }

  /** Try a stuck (or waiting) event again now; without an id, every stuck one. */
  async retry(id) {
    const changed = await this._store.update(id ? [id] : await this._ids('stuck'), (r) => (
      r.state === 'stuck' || r.state === 'queued' ? { ...r, state: 'queued', attempts: 0, nextAt: 0 } : r));
    this.resume();
    if (changed.length) this._changed();
    return this.flush();
  }

  /** Forget an event the app no longer wants (typically a rejected one it has shown). */
  async dismiss(id) {
    const changed = await this._store.update([id], (r) => (r.state === 'sent' ? r : null));
    if (changed.length) this._changed();
    return changed.length > 0;
  }

  /** After a 401 pause (the user signed in again): flush with a fresh token. */
  resume() {
    if (!this.paused) return;
    this.paused = false;
    this.flush();
    this._syncInbox();
  }

  /** Send what is due now; resolves when this tab's flush is done. */
  flush() {
    if (this._closed) return Promise.resolve();
    if (this._flushing) {
      this._flushAgain = true;
      return this._flushing;
    }
    this._flushing = (async () => {
      try {
        do {
          this._flushAgain = false;
          await this._exclusively(() => this._drain());
        } while (this._flushAgain && !this._closed);
      } catch (error) {
        this._emit('error', { error });
      } finally {
        this._flushing = null;
      }
    })();
    return this._flushing;
  }

  close() {
    this._closed = true;
    for (const t of this._timers) { clearTimeout(t); clearInterval(t); }
    this._timers.clear();
    clearTimeout(this._receiptTimer);
    clearTimeout(this._flushTimer && this._flushTimer.id);
    if (this._inboxAbort) this._inboxAbort.abort();
    for (const [target, type, fn] of this._listeners || []) target.removeEventListener(type, fn);
    if (this._channel) this._channel.close();
    this._store.close();
  }

  // ---- flushing ------------------------------------------------------------------------------

  async _drain() {
    while (!this._closed && !this.paused && this._online()) {
      const queued = await this._store.inState('queued', this._batchLimit);
      if (!queued.length) return;
      const wait = queued[0].nextAt - Date.now();
      if (wait > 0) { // the head is backing off: later events wait behind it, in order
        this._flushIn(wait);
        return;
      }
      const batch = takeBatch(queued, this._batchLimit);
      const answer = await this._call('POST', EVENTS_PATH, batch.map((r) => r.envelope));
      if (!(await this._settle(batch, answer))) return;
    }
  }

  /** Apply one answer to its batch; false when flushing should stop for now. */
  async _settle(batch, { status, body, retryAfterMs }) {
    const outcome = classify(status);
    if (outcome === 'sent') {
      const alone = batch.length === 1 && body && 'result' in body;
      const final = alone && QUERY_EVENT_TYPES.includes(batch[0].envelope.event_type);
      const changed = await this._store.update(batch.map((r) => r.id), (r) => (
        final ? null : { ...r, state: 'sent', sentAt: Date.now(), attempts: 0, nextAt: 0 }));
      for (const r of changed) this._emit('sent', { id: r.id, eventType: r.envelope.event_type });
      if (alone) {
        const detail = { id: batch[0].id, eventType: batch[0].envelope.event_type, result: body.result };
        this._emit('result', detail);
        if (final) this._announce('applied', { ...detail, at: new Date().toISOString() });
      }
      this._changed();
      this._receiptDelay = this._intervals.receipt;
      this._scheduleReceipts(this._intervals.receipt);
      return true;
    }
    if (outcome === 'unauthorized') { // _call already asked for a fresh token once
      this.paused = true;
      this._announce('paused', { status, error: body });
      return false;
    }
    if (outcome === 'rejected') return this._reject(batch, status, body);
    await this._failed(batch, retryAfterMs);
    return false;
  }

  async _reject(batch, status, body) {
    const perIndex = body && Array.isArray(body.errors)
      ? new Map(body.errors.filter((e) => Number.isInteger(e.index)).map((e) => [e.index, e])) : new Map();
    if (batch.length > 1 && !perIndex.size) {
      // the batch as a whole was refused (too many, too large): halve it until an event is alone
      this._batchLimit = Math.max(1, Math.floor(batch.length / 2));
      return true;
    }
    const refused = batch.length === 1 && !perIndex.size ? new Map([[0, body]]) : perIndex;
    const ids = new Map([...refused].map(([i, e]) => [batch[i].id, errorOf(e)]));
    const changed = await this._store.update([...ids.keys()], (r) => (
      r.state === 'queued' ? { ...r, state: 'rejected', status, error: ids.get(r.id), source: 'ingress' } : r));
    for (const r of changed) this._announce('rejected', rejectedDetail(r));
    this._changed();
    return true; // the others go again, without the invalid ones
  }

  async _failed(batch, retryAfterMs) {
    const now = Date.now();
    const changed = await this._store.update(batch.map((r) => r.id), (r) => {
      if (r.state !== 'queued') return r;
      const attempts = r.attempts + 1;
      if (attempts > this.maxRetries) return { ...r, attempts, state: 'stuck', nextAt: 0 };
      return { ...r, attempts, nextAt: now + retryDelayMs(attempts, this._backoff, retryAfterMs) };
    });
    for (const r of changed.filter((c) => c.state === 'stuck')) {
      this._announce('stuck', { id: r.id, eventType: r.envelope.event_type, attempts: r.attempts });
    }
    const next = changed.filter((r) => r.state === 'queued').map((r) => r.nextAt);
    if (next.length) this._flushIn(Math.min(...next) - now);
    this._changed();
  }

  // ---- receipts and the inbox -----------------------------------------------------------------

  _scheduleReceipts(delayMs) {
    if (this._closed) return;
    clearTimeout(this._receiptTimer);
    this._receiptTimer = setTimeout(() => this._pollReceipts(), delayMs);
  }

  async _pollReceipts() {
    if (this._closed || this.paused || !this._online()) return;
    let sent = [];
    try {
      sent = await this._store.inState('sent', this.maxBatchEvents);
      if (!sent.length) return;
      const { status, body } = await this._call('POST', RECEIPTS_PATH, {
        events: sent.map((r) => ({ client_generated_id: r.id, event_type: r.envelope.event_type })) });
      const settled = status === 200 ? await this._applyReceipts(body.receipts || []) : 0;
      this._receiptDelay = settled ? this._intervals.receipt
        : Math.min(this._intervals.receiptMax, this._receiptDelay * 2);
    } catch (error) {
      this._receiptDelay = Math.min(this._intervals.receiptMax, this._receiptDelay * 2);
    } finally {
      if (sent.length) this._scheduleReceipts(this._receiptDelay);
    }
  }

  async _applyReceipts(receipts) {
    const byId = new Map(receipts.filter((r) => r.status !== 'pending').map((r) => [r.client_generated_id, r]));
    if (!byId.size) return 0;
    const changed = await this._store.update([...byId.keys()], (r) => {
      if (r.state !== 'sent') return r;
      const receipt = byId.get(r.id);
      if (receipt.status === 'applied') return null;
      return { ...r, state: 'rejected', status: null, source: 'worker',
        error: { error: receipt.reason, detail: receipt.detail, field: receipt.field ?? null } };
    }, true);
    for (const { before, after } of changed) {
      if (after) this._announce('rejected', rejectedDetail(after));
      else this._announce('applied', { id: before.id, eventType: before.envelope.event_type, at: byId.get(before.id).at });
    }
    this._changed();
    return changed.length;
  }

  /** Long-poll the inbox while the page is visible; each item is an `inbox` event. */
  async _syncInbox() {
    if (!this._inboxOn || this._inboxAbort || this._closed || !this._visible()) return;
    const abort = this._inboxAbort = new AbortController();
    let cursor = await this._store.meta('inboxCursor');
    let failures = 0;
    try {
      while (!abort.signal.aborted && !this.paused && this._visible()) {
        const query = new URLSearchParams({ limit: '50', wait: String(this.inboxWaitS) });
        if (cursor) query.set('after', cursor);
        const { status, body, retryAfterMs } = await this._call('GET', `${INBOX_PATH}?${query}`, undefined,
          abort.signal);
        if (status === 200) {
          failures = 0;
          for (const item of body.items || []) {
            this._emit('inbox', { item });
            if (item.event_type === 'event.rejected') this._scheduleReceipts(0);
          }
          if (body.next_cursor && body.next_cursor !== cursor) {
            cursor = body.next_cursor;
            await this._store.setMeta('inboxCursor', cursor);
          }
        } else if (status === 401) {
          this.paused = true;
          this._announce('paused', { status, error: body });
        } else {
          failures += 1;
          await this._sleep(retryDelayMs(failures, this._backoff, retryAfterMs), abort.signal);
        }
      }
    } catch (error) {
      if (!abort.signal.aborted) this._later(this._backoff.baseMs, () => this._syncInbox());
    } finally {
      if (this._inboxAbort === abort) this._inboxAbort = null;
    }
  }

  // ---- plumbing ------------------------------------------------------------------------------

  /** One HTTP exchange with a bearer token; a 401 asks getToken for a fresh one, once.
   * Network failures come back as status 0, never as an exception (unless aborted). */
  async _call(method, path, payload, signal) {
    for (const forceRefresh of [false, true]) {
      let response;
      try {
        const token = await this._getToken({ forceRefresh });
        const headers = { Authorization: `Bearer ${token}` };
        if (payload !== undefined) headers['Content-Type'] = 'application/json';
        response = await this._fetch(this.baseUrl + path, {
          method, headers, signal, cache: 'no-store',
          body: payload === undefined ? undefined : JSON.stringify(payload) });
      } catch (error) {
        if (signal && signal.aborted) throw error;
        return { status: 0, body: { error: 'network_error', detail: String(error && error.message) }, retryAfterMs: 0 };
      }
      let body = null;
      try { body = await response.json(); } catch { /* an empty or non-JSON answer */ }
      const answer = { status: response.status, body, retryAfterMs: parseRetryAfter(response.headers.get('Retry-After')) };
      if (response.status !== 401 || forceRefresh) return answer;
    }
    throw new Error('unreachable');
  }

  _envelope(eventType, data) {
    if (typeof eventType !== 'string' || !eventType) throw new TypeError('eventType must be a string');
    if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new TypeError('data must be an object');
    return {
      schema_version: this.schemaVersion,
      event_type: eventType,
      client_generated_id: newId(),
      user_id: this.userId,
      timestamp: new Date().toISOString(),
      source_service: this.sourceService,
      data: JSON.parse(JSON.stringify(data)), // what the server will see, frozen now
    };
  }

  /** Only one tab flushes at a time: the Web Locks API where there is one (every current
   * browser); a WebView without it has a single page anyway. */
  _exclusively(fn) {
    const locks = globalThis.navigator && globalThis.navigator.locks;
    return locks ? locks.request(`spotter-flush:${this._store.name}`, fn) : fn();
  }

  async _ids(state) {
    return (await this._store.inState(state)).map((r) => r.id);
  }

  _listen() {
    this._listeners = [];
    const on = (target, type, fn) => {
      if (target && target.addEventListener) {
        target.addEventListener(type, fn);
        this._listeners.push([target, type, fn]);
      }
    };
    on(globalThis, 'online', () => { this.retry(); this._syncInbox(); });
    on(globalThis.document, 'visibilitychange', () => {
      if (this._visible()) { this.flush(); this._scheduleReceipts(0); this._syncInbox(); } else if (this._inboxAbort) {
        this._inboxAbort.abort();
      }
    });
    if (typeof BroadcastChannel === 'function') { // what one tab learns, every tab's app hears
      this._channel = new BroadcastChannel(`spotter:${this._store.name}`);
      this._channel.onmessage = ({ data }) => {
        if (data && data.type) this._emit(data.type, data.detail);
        if (data && data.type !== 'change') this._emit('change', {});
      };
    }
  }

  _announce(type, detail) {
    this._emit(type, detail);
    if (this._channel) this._channel.postMessage({ type, detail });
  }

  _changed() { this._announce('change', {}); }

  _emit(type, detail) {
    if (!this._closed) this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _online() { return !(globalThis.navigator && globalThis.navigator.onLine === false); }

  _visible() { return !(globalThis.document && globalThis.document.visibilityState === 'hidden'); }

  _later(ms, fn) {
    const t = setTimeout(() => { this._timers.delete(t); if (!this._closed) fn(); }, Math.max(0, ms));
    this._timers.add(t);
  }

  /** One timer for the next due flush, however many flushes asked for it. */
  _flushIn(ms) {
    const at = Date.now() + Math.max(0, ms);
    if (this._flushTimer && this._flushTimer.at <= at) return;
    clearTimeout(this._flushTimer && this._flushTimer.id);
    this._flushTimer = { at, id: setTimeout(() => { this._flushTimer = null; if (!this._closed) this.flush(); }, at - Date.now()) };
  }

  _every(ms, fn) { this._timers.add(setInterval(() => { if (!this._closed) fn(); }, ms)); }

  _sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(resolve, ms);
      signal.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason); }, { once: true });
    });
  }
}

/** The leading events of the queue that may travel together: a query event goes alone. */
function takeBatch(queued, limit) {
  const due = Date.now();
  const batch = [];
  for (const r of queued) {
    const alone = QUERY_EVENT_TYPES.includes(r.envelope.event_type);
    if (batch.length && (alone || r.nextAt > due || batch.length >= limit)) break;
    batch.push(r);
    if (alone) break;
  }
  return batch;
}

function errorOf(e) {
  const { error = 'rejected', detail = '', field = null } = e || {};
  return { error, detail, field };
}

function rejectedDetail(r) {
  return { id: r.id, eventType: r.envelope.event_type, status: r.status, source: r.source, error: r.error,
    data: r.envelope.data };
}

function view(r) {
  return { id: r.id, eventType: r.envelope.event_type, state: r.state, attempts: r.attempts,
    nextAttemptAt: r.nextAt || null, status: r.status ?? null, error: r.error ?? null,
    createdAt: r.envelope.timestamp, data: r.envelope.data };
}

function newId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context; this does not
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The IndexedDB side: one `events` store keyed by client_generated_id, kept in send order by a
 * counter in `meta` (a timestamp could repeat or go backwards). */
class Outbox {
  constructor(idb, keyRange, name) {
    if (!idb || !keyRange) throw new TypeError('SpotterClient needs IndexedDB (indexedDB and IDBKeyRange)');
    this.name = name;
    this._keyRange = keyRange;
    this._db = new Promise((resolve, reject) => {
      const open = idb.open(name, 1);
      open.onupgradeneeded = () => {
        const events = open.result.createObjectStore('events', { keyPath: 'id' });
        events.createIndex(STATE_INDEX, ['state', 'seq']);
        open.result.createObjectStore('meta');
      };
      open.onsuccess = () => {
        open.result.onversionchange = () => open.result.close();
        resolve(open.result);
      };
      open.onerror = () => reject(open.error);
    });
  }

  async _tx(stores, mode, fn) {
    const tx = (await this._db).transaction(stores, mode);
    const result = fn(tx);
    await new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = tx.onabort = () => reject(tx.error || new Error('IndexedDB transaction aborted'));
    });
    return result;
  }

  /** Durable once this resolves: the transaction committed. */
  add(envelope) {
    return this._tx(['events', 'meta'], 'readwrite', (tx) => {
      const meta = tx.objectStore('meta');
      const read = meta.get('seq');
      read.onsuccess = () => {
        const seq = (read.result || 0) + 1;
        meta.put(seq, 'seq');
        tx.objectStore('events').add({ id: envelope.client_generated_id, seq, envelope, state: 'queued',
          attempts: 0, nextAt: 0 });
      };
    });
  }

  async inState(state, limit) {
    const all = await this._tx(['events'], 'readonly', (tx) => tx.objectStore('events').index(STATE_INDEX)
      .getAll(this._keyRange.bound([state, -Infinity], [state, Infinity]), limit));
    return all.result;
  }

  /** Re-read each record and replace it with fn(record) (null deletes it) in one transaction.
   * Returns the records that changed (or {before, after} pairs with `pairs`). */
  update(ids, fn, pairs = false) {
    const changed = [];
    return this._tx(['events'], 'readwrite', (tx) => {
      const events = tx.objectStore('events');
      for (const id of ids) {
        const read = events.get(id);
        read.onsuccess = () => {
          const before = read.result;
          if (!before) return;
          const after = fn(before);
          if (after === before) return;
          if (after) events.put(after); else events.delete(id);
          changed.push(pairs ? { before, after } : (after || before));
        };
      }
    }).then(() => changed);
  }

  async meta(key) {
    const read = await this._tx(['meta'], 'readonly', (tx) => tx.objectStore('meta').get(key));
    return read.result;
  }

  setMeta(key, value) {
    return this._tx(['meta'], 'readwrite', (tx) => tx.objectStore('meta').put(value, key));
  }

  close() {
    this._db.then((db) => db.close(), () => {});
  }
}
