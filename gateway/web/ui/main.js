// The dashboard: the tenant's jobs, live.
//
// The jobs come from the JSON list, read each time the stream opens, after it opened: every
// change after the stream's position arrives on it, and the list read afterwards holds
// everything before, so nothing falls between the two. Events that come while the list
// loads wait for it. A reconnect resumes from the last event id, and the list is read
// again anyway: a stream that could not resume (Redis lost its data, or was restored from
// an older copy) opens with the jobs that have not ended and nothing else, which the page
// could not tell from a resume. A `reset` event, or events of another Redis data set (the
// epoch in their ids), make the page read the list again too.

import {Access} from "./access.js";
import {Feed} from "./feed.js";
import * as format from "./format.js";
import {Store} from "./store.js";
import {Table} from "./table.js";

const HISTORY = 500; // jobs read at start; "Load older jobs" reads more
const PAGE = 200; // the list's largest page
const MAX_WAITING = 20_000; // events held while the list loads; past it, read it again
const TENANT = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const $ = (id) => document.getElementById(id);

const access = Access.fromPage();
let loading = null; // events that came while the list loads, or null
let again = false; // read the list once more when this read is done
let generation = 0; // one more each time the list replaces what the page holds
let wake = null; // ends the wait between two failed reads of the list at once
let epoch = null;
let cursor = null; // where older history continues
let feed = null;

class Refused extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

const table = new Table({
  tbody: $("rows"),
  empty: $("empty"),
  filters: $("filters"),
  counts: document.querySelectorAll("[data-count]"),
  access,
  downloadUrl: (id) => access.withToken(`v1/jobs/${encodeURIComponent(id)}/download`),
  actions: {cancel},
});
const store = new Store((id) => table.changed(id));
table.store = store;

let said = 0;

function say(text) {
  $("message").textContent = text;
  clearTimeout(said);
  if (text) said = setTimeout(() => { $("message").textContent = ""; }, 8000);
}

function showState(state) {
  const words = {connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…",
                 offline: "Offline: retrying", expired: "Token expired", stopped: "Not connected"};
  $("connection").dataset.state = state;
  $("connection-text").textContent = words[state];
}

function newLinkCommand() {
  // The claims are not verified here: only a tenant name as the gateway allows it is shown.
  const tenant = access.tenant && TENANT.test(access.tenant) ? access.tenant : "NAME";
  const write = access.writeToken !== null || access.scope === "write";
  return `gateway dashboard-url --tenant ${tenant}${write ? " --write" : ""}`;
}

function notice(title, text, command) {
  $("notice-title").textContent = title;
  $("notice-text").textContent = text;
  $("notice-command").textContent = command || "";
  $("notice-command").hidden = !command;
  $("notice").hidden = false;
}

function stop(state) {
  if (feed) feed.stop();
  loading = null;
  if (wake) wake();
  showState(state);
  document.body.dataset.stopped = "true"; // nothing more can be done from here: no Cancel
}

// A 401 or 403: what it means for this page, said once, and the stream stopped.
function refused(status) {
  if (access.expired) {
    stop("expired");
    const shown = store.jobs.size ? " The table shows the jobs as they were then." : "";
    notice("Your link expired",
           `It expired at ${format.time(access.expiresAt)}.${shown} Ask for a new link; ` +
           "whoever runs the gateway makes one, with its REDIS_URL set, with:",
           newLinkCommand());
  } else if (status === 401 && access.token === null) {
    stop("stopped");
    notice("This gateway needs a credential",
           "Open the dashboard with a link that carries a token. Whoever runs the gateway " +
           "makes one, with its REDIS_URL set, with:", newLinkCommand());
  } else if (status === 401) {
    stop("stopped");
    notice("The gateway refused this link",
           "Its token was revoked, or was made for another gateway. Ask for a new link:",
           newLinkCommand());
  } else {
    stop("stopped");
    notice("This link cannot show the tenant's jobs",
           "Its token is limited to some jobs, or to another use. Ask for a new link:",
           newLinkCommand());
  }
}

async function getJson(url) {
  const response = await fetch(url, {headers: access.headers(), cache: "no-store"});
  if (response.status === 401 || response.status === 403) {
    throw new Refused(response.status, "refused");
  }
  if (!response.ok) throw new Error(`${response.status}`);
  return response.json();
}

function listUrl(limit, from) {
  const params = access.scopeParams();
  if (!access.jobIds) params.set("limit", String(limit));
  if (from) params.set("cursor", from);
  return `v1/jobs?${params}`;
}

async function readHistory() {
  const jobs = [];
  let next = null;
  do {
    const page = await getJson(listUrl(PAGE, next));
    jobs.push(...page.jobs);
    next = page.next_cursor;
  } while (next && jobs.length < HISTORY);
  return {jobs, next};
}

// Read the list again and start over from it; the events meanwhile wait, then apply.
// Asked while a read is under way (whose request may have gone out before the moment it
// is asked for), it reads once more after that one.
async function resync() {
  if (loading !== null) {
    again = true;
    if (wake) wake(); // a read that failed waits no longer: the stream is back
    return;
  }
  loading = [];
  $("older").disabled = true;
  for (let attempt = 0; ; attempt += 1) {
    again = false;
    try {
      const {jobs, next} = await readHistory();
      if (loading === null) return; // stopped meanwhile
      if (again) continue;
      store.replace(jobs);
      generation += 1;
      cursor = next;
      $("older").hidden = !cursor;
      break;
    } catch (error) {
      if (error instanceof Refused) {
        refused(error.status);
        return;
      }
      if (loading === null) return;
      say("Could not read the jobs from the gateway; trying again…");
      if ($("connection").dataset.state !== "offline") showState("reconnecting");
      await new Promise((done) => {
        const timer = setTimeout(done, Math.min(1000 * 2 ** attempt, 15_000));
        wake = () => {
          clearTimeout(timer);
          done();
        };
      });
      wake = null;
      if (loading === null) return;
    }
  }
  say("");
  if (feed && feed.source && feed.source.readyState === EventSource.OPEN) showState("live");
  const waiting = loading;
  loading = null;
  $("older").disabled = false;
  for (const [name, data, id] of waiting) {
    // A reset comes only as a stream opens, and this read began after that: it is done.
    if (name !== "reset") handle(name, data, id);
  }
}

function handle(name, data, id) {
  if (loading !== null) {
    if (loading.length >= MAX_WAITING) {
      // The list read after this moment holds all of these: drop them, read again.
      loading.length = 0;
      again = true;
    }
    loading.push([name, data, id]);
    return;
  }
  if (id) {
    const dataSet = id.split("-")[0];
    if (epoch !== null && dataSet !== epoch) {
      // Redis lost its data: what the page holds may be gone.
      epoch = dataSet;
      resync();
      loading.push([name, data, id]);
      return;
    }
    epoch = dataSet;
  }
  if (name === "snapshot" || name === "progress" || name === "status") {
    store.put(data);
  } else if (name === "deleted") {
    store.remove(data.job_id);
  } else if (name === "reset") {
    resync();
  }
}

async function probe() {
  if (access.expired) {
    refused(401);
    return "stop";
  }
  try {
    await getJson(listUrl(1));
  } catch (error) {
    if (error instanceof Refused) {
      refused(error.status);
      return "stop";
    }
  }
  return "retry";
}

async function cancel(id, button) {
  button.disabled = true;
  try {
    const response = await fetch(`v1/jobs/${encodeURIComponent(id)}/cancel`,
                                 {method: "POST", headers: access.headers()});
    const body = await response.json().catch(() => ({}));
    if (response.status === 202) {
      store.offer(body);
      say(body.status === "canceled" ? `${id} canceled.` : `Cancel of ${id} requested.`);
    } else {
      say(`Could not cancel ${id}: ${body.detail || `the gateway answered ${response.status}`}`);
      if (response.status === 401) refused(401);
    }
  } catch {
    say(`Could not cancel ${id}: the gateway did not answer.`);
  } finally {
    button.disabled = false;
  }
}

async function older() {
  const button = $("older");
  const from = generation;
  button.disabled = true;
  try {
    const page = await getJson(listUrl(PAGE, cursor));
    if (from !== generation || loading !== null) return; // the list was read again meanwhile
    for (const job of page.jobs) store.offer(job);
    cursor = page.next_cursor;
    button.hidden = !cursor;
  } catch (error) {
    if (error instanceof Refused) refused(error.status);
    else say("Could not read older jobs; try again.");
  } finally {
    button.disabled = loading !== null;
  }
}

function start() {
  if (access.tenant) $("tenant").textContent = access.tenant;
  $("mode").hidden = access.canWrite || !access.readable;
  $("older").addEventListener("click", older);
  addEventListener("hashchange", () => {
    if (new URLSearchParams(location.hash.slice(1)).get("token")) location.reload();
  });
  if (!access.readable) {
    showState("stopped");
    notice("This link's token cannot be read", "The link was cut short or changed. Ask " +
           "for a new link; whoever runs the gateway makes one with:", newLinkCommand());
    return;
  }
  if (access.expired) {
    refused(401);
    return;
  }
  feed = new Feed({
    url: (lastId) => {
      const params = access.scopeParams();
      if (lastId) params.set("last_event_id", lastId);
      return access.withToken("v1/jobs", params);
    },
    onOpen: () => resync(),
    onEvent: handle,
    onState: showState,
    probe,
    onOnline: () => {
      if (wake) wake(); // a read of the list that failed offline: again, now
    },
  });
  if (access.expiresAt !== null) {
    const left = access.expiresAt - Date.now();
    if (left < 2 ** 31) setTimeout(() => refused(401), left);
  }
  setInterval(() => table.tick(), 1000);
  feed.start();
}

start();
