// The jobs the page knows, keyed by id, and which of them changed since the last frame.
//
// Every source hands whole snapshots: the JSON list, the stream's events, a cancel's
// answer. A snapshot replaces the one held only if it is newer: a later incarnation of the
// id (a job deleted and created again starts at version 1 with a later created_at), or a
// higher version of the same one. So a list page that was read before an event and arrives
// after it cannot turn a row back.

function newer(candidate, held) {
  if (held === undefined) return true;
  if (candidate.created_at !== held.created_at) return candidate.created_at > held.created_at;
  return candidate.version > held.version;
}

export class Store {
  constructor(onChange) {
    this.jobs = new Map();
    this.removed = new Set(); // deleted while a list page may still hold them
    this._onChange = onChange; // (id) => void, once per change
  }

  // From the stream: it is ordered, and a job it brings is alive again.
  put(snapshot) {
    this.removed.delete(snapshot.job_id);
    this._offer(snapshot);
  }

  // From a list page or an answer: never brings back a job the stream deleted.
  offer(snapshot) {
    if (this.removed.has(snapshot.job_id)) return;
    this._offer(snapshot);
  }

  _offer(snapshot) {
    if (!newer(snapshot, this.jobs.get(snapshot.job_id))) return;
    this.jobs.set(snapshot.job_id, snapshot);
    this._onChange(snapshot.job_id);
  }

  remove(jobId) {
    this.removed.add(jobId);
    if (this.jobs.delete(jobId)) this._onChange(jobId);
  }

  // A record that expired in Redis (nothing is published then).
  expire(jobId) {
    if (this.jobs.delete(jobId)) this._onChange(jobId);
  }

  // A full reload (first load, a reset, another Redis data set): what the list holds,
  // and nothing the list does not.
  replace(snapshots) {
    const fresh = new Map(snapshots.map((s) => [s.job_id, s]));
    for (const id of this.jobs.keys()) {
      if (!fresh.has(id)) {
        this.jobs.delete(id);
        this._onChange(id);
      }
    }
    this.removed.clear();
    for (const snapshot of fresh.values()) {
      this.jobs.set(snapshot.job_id, snapshot);
      this._onChange(snapshot.job_id);
    }
  }
}
