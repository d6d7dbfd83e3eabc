// The page's one EventSource on the tenant's jobs, kept open.
//
// The browser reconnects by itself after a dropped connection or a stream the gateway
// ended, and sends Last-Event-ID. It gives up for good on an HTTP error (a 503 while the
// gateway restarts, a 401 once a token expired): then the page asks why (probe) and opens
// a new EventSource with ?last_event_id= at the last id it saw, so that nothing is lost.

const EVENTS = ["snapshot", "progress", "status", "deleted", "reset", "unknown"];
const OFFLINE_AFTER_MS = 10_000; // reconnecting this long: say "offline" (and keep trying)
const BACKOFF_MS = [1_000, 2_000, 4_000, 8_000, 15_000];

export class Feed {
  // url(lastId): the stream's URL; onOpen(): each time it opens; onEvent(name, data, id);
  // onState("connecting" | "live" | "reconnecting" | "offline"); probe(): "retry" or
  // "stop", asked when the browser stopped reconnecting; onOnline(): the browser is
  // back online.
  constructor({url, onOpen, onEvent, onState, probe, onOnline}) {
    Object.assign(this, {url, onOpen, onEvent, onState, probe, onOnline});
    this.lastId = null;
    this.source = null;
    this.failures = 0;
    this._offlineTimer = null;
    this._retryTimer = null;
    this.stopped = false;
  }

  start() {
    addEventListener("offline", () => {
      if (!this.stopped) this._say("offline");
    });
    addEventListener("online", () => {
      if (this.stopped) return;
      if (this.onOnline) this.onOnline();
      const source = this.source;
      if (source === null || source.readyState === EventSource.CLOSED) {
        this._open();
      } else if (source.readyState === EventSource.OPEN) {
        clearTimeout(this._offlineTimer);
        this._offlineTimer = null;
        this._say("live"); // the connection outlived the blip
      } else {
        this._say("reconnecting");
      }
    });
    this._say("connecting");
    this._open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this._offlineTimer);
    clearTimeout(this._retryTimer);
    if (this.source) this.source.close();
    this.source = null;
  }

  _open() {
    clearTimeout(this._retryTimer);
    if (this.source) this.source.close();
    const source = new EventSource(this.url(this.lastId));
    this.source = source;
    source.onopen = () => {
      if (source !== this.source) return;
      this.failures = 0;
      clearTimeout(this._offlineTimer);
      this._offlineTimer = null;
      this._say("live");
      this.onOpen();
    };
    for (const name of EVENTS) {
      source.addEventListener(name, (event) => {
        if (source !== this.source) return;
        if (event.lastEventId) this.lastId = event.lastEventId;
        let data = null;
        try { data = JSON.parse(event.data); } catch { return; }
        this.onEvent(name, data, event.lastEventId);
      });
    }
    source.onerror = () => {
      if (source !== this.source || this.stopped) return;
      this._troubled();
      if (source.readyState !== EventSource.CLOSED) return; // the browser retries
      source.close();
      this.source = null;
      this.probe().then((verdict) => {
        if (verdict !== "retry" || this.stopped) return;
        const base = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
        this.failures += 1;
        this._retryTimer = setTimeout(() => this._open(), base * (0.5 + Math.random()));
      });
    };
  }

  _troubled() {
    if (!navigator.onLine) {
      this._say("offline");
      return;
    }
    if (this._offlineTimer === null) {
      this._say("reconnecting");
      this._offlineTimer = setTimeout(() => {
        if (!this.stopped) this._say("offline");
      }, OFFLINE_AFTER_MS);
    }
  }

  _say(state) {
    this.onState(state);
  }
}
