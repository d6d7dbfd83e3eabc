// The table: one row per job, built once and then changed cell by cell. Changes are
// collected as they come and drawn once per animation frame, so that a burst of events
// costs one layout, not one per event.

import * as format from "./format.js";

const STATUSES = ["queued", "running", "completed", "failed", "canceled"];

function cell(tr, className) {
  const td = document.createElement("td");
  td.setAttribute("role", "cell"); // kept when a phone-width screen lays rows out as cards
  if (className) td.className = className;
  tr.append(td);
  return td;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

class Row {
  constructor(id, actions) {
    const tr = (this.tr = document.createElement("tr"));
    tr.dataset.jobId = id;
    tr.setAttribute("role", "row");
    const job = cell(tr, "job");
    this.id = document.createElement("span");
    this.id.className = "job-id";
    this.id.textContent = id;
    this.file = document.createElement("span");
    this.file.className = "file";
    this.conversion = document.createElement("span");
    this.conversion.className = "conversion";
    job.append(this.id, this.file, this.conversion);

    const progress = cell(tr, "col-progress");
    this.bar = document.createElement("div");
    this.bar.className = "bar-track";
    this.bar.setAttribute("role", "progressbar");
    this.bar.setAttribute("aria-valuemin", "0");
    this.bar.setAttribute("aria-valuemax", "100");
    this.bar.setAttribute("aria-label", `Progress of ${id}`);
    this.fill = document.createElement("div");
    this.fill.className = "bar-fill";
    this.bar.append(this.fill);
    this.progressText = document.createElement("span");
    this.progressText.className = "progress-text";
    this.left = document.createElement("span");
    this.left.className = "time-left";
    progress.append(this.bar, this.progressText, this.left);

    this.badge = document.createElement("span");
    this.badge.className = "badge";
    cell(tr, "status").append(this.badge);
    this.age = cell(tr, "col-time age");
    this.duration = cell(tr, "col-time duration");
    this.details = cell(tr, "details");

    const action = cell(tr, "action");
    this.cancel = document.createElement("button");
    this.cancel.type = "button";
    this.cancel.className = "cancel";
    this.cancel.textContent = "Cancel";
    this.cancel.setAttribute("aria-label", `Cancel ${id}`);
    this.cancel.addEventListener("click", () => actions.cancel(id, this.cancel));
    action.append(this.cancel);
    this.job = null;
    this.detailsKey = "";
  }

  update(job, access, downloadUrl, now) {
    this.job = job;
    this.tr.dataset.status = job.status;
    const c = job.conversion || {};
    setText(this.file, c.original_filename || "");
    setText(this.conversion, format.conversion(c));

    const pct = format.percent(job);
    const shown = Math.floor(pct);
    this.fill.style.width = `${pct}%`;
    this.bar.setAttribute("aria-valuenow", String(shown));
    const phase = format.ENDED.has(job.status) ? "" : (job.progress && job.progress.phase) || "";
    this.bar.setAttribute("aria-valuetext", phase ? `${shown}%, ${phase}` : `${shown}%`);
    setText(this.progressText, phase ? `${shown}% · ${phase}` : `${shown}%`);

    const label = format.statusLabel(job);
    setText(this.badge, label);
    this.badge.dataset.status = label === "cancel requested" ? "cancel-requested" : job.status;

    this.cancel.hidden = !access.canWrite || format.ENDED.has(job.status) || job.cancel_requested;
    this.drawDetails(downloadUrl);
    this.tick(now);
  }

  drawDetails(downloadUrl) {
    const job = this.job;
    const output = job.status === "completed" && job.output && !this.outputExpired()
      ? job.output : null;
    const error = job.status === "failed" && job.error ? job.error : null;
    const key = JSON.stringify([job.status, output, error]);
    if (key === this.detailsKey) return;
    this.detailsKey = key;
    const details = this.details;
    details.replaceChildren();
    if (error) {
      const code = document.createElement("code");
      code.className = "error-code";
      code.textContent = error.code;
      const message = document.createElement("span");
      message.className = "error-message";
      message.textContent = error.message;
      details.append(code, " ", message);
    } else if (output) {
      const link = document.createElement("a");
      link.className = "download";
      link.href = downloadUrl(job.job_id);
      link.rel = "noreferrer";
      link.target = "_blank"; // the file opens beside the page, which stays live
      link.textContent = `Download ${output.file_name || "output"}`;
      details.append(link);
      const bytes = format.size(output.file_size_bytes);
      if (bytes) details.append(` (${bytes})`);
    } else if (job.status === "completed") {
      details.append("Output expired");
    }
  }

  outputExpired() {
    const at = this.job.output && this.job.output.expires_at;
    return Boolean(at) && Date.parse(at) <= Date.now();
  }

  tick(now) {
    const job = this.job;
    const created = Date.parse(job.created_at);
    setText(this.age, format.duration(now - created));
    const end = format.ENDED.has(job.status) ? Date.parse(job.updated_at) : now;
    setText(this.duration, job.status === "queued" ? "" : format.duration(end - created));
    setText(this.left, format.timeLeft(job, now));
  }
}

export class Table {
  constructor({tbody, empty, filters, counts, access, downloadUrl, actions}) {
    Object.assign(this, {tbody, empty, filters, counts, access, downloadUrl, actions});
    this.rows = new Map();
    this.now = Date.now(); // the clock of every age shown, moved once a second (tick)
    this.order = []; // ids, newest created first
    this.pending = new Set();
    this.frame = 0;
    this.filter = "";
    this.store = null;
    for (const button of filters.querySelectorAll("button")) {
      button.addEventListener("click", () => this.setFilter(button.dataset.status));
    }
  }

  changed(id) {
    this.pending.add(id);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  setFilter(status) {
    this.filter = status;
    for (const button of this.filters.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.status === status));
    }
    for (const row of this.rows.values()) row.tr.hidden = !this.shows(row.job);
  }

  shows(job) {
    return !this.filter || job.status === this.filter;
  }

  draw() {
    this.frame = 0;
    const jobs = this.store.jobs;
    for (const id of this.pending) {
      const job = jobs.get(id);
      let row = this.rows.get(id);
      if (job === undefined) {
        if (row) this.drop(id, row);
        continue;
      }
      if (row === undefined) {
        row = new Row(id, this.actions);
        this.rows.set(id, row);
        row.update(job, this.access, this.downloadUrl, this.now);
        this.place(id, row);
      } else {
        const moved = row.job.created_at !== job.created_at;
        row.update(job, this.access, this.downloadUrl, this.now);
        if (moved) {
          this.order.splice(this.order.indexOf(id), 1);
          this.place(id, row);
        }
      }
      row.tr.hidden = !this.shows(job);
    }
    this.pending.clear();
    this.drawCounts();
  }

  // Newest created first: a new job goes to the top, a page of older ones below. Times
  // are to the second: a job created in the same second as others goes above them.
  place(id, row) {
    const created = row.job.created_at;
    const order = this.order;
    let low = 0;
    let high = order.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      const other = this.rows.get(order[mid]).job;
      if (other.created_at > created) {
        low = mid + 1;
      } else {
        high = mid;
      }
    }
    const next = order[low];
    order.splice(low, 0, id);
    this.tbody.insertBefore(row.tr, next === undefined ? null : this.rows.get(next).tr);
  }

  drop(id, row) {
    row.tr.remove();
    this.rows.delete(id);
    this.order.splice(this.order.indexOf(id), 1);
  }

  drawCounts() {
    const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const row of this.rows.values()) counts[row.job.status] += 1;
    for (const node of this.counts) {
      const status = node.dataset.count;
      setText(node, String(status ? counts[status] : this.rows.size));
    }
    this.empty.hidden = this.rows.size > 0;
  }

  // Once a second: ages, durations, outputs that expired, records that expired (their
  // record is gone from Redis; nothing is published when that happens).
  tick() {
    const now = (this.now = Date.now());
    for (const [id, row] of this.rows) {
      const job = row.job;
      if (job.expires_at && Date.parse(job.expires_at) <= now) {
        this.store.expire(id);
        continue;
      }
      if (row.tr.hidden) continue;
      row.tick(now);
      if (job.status === "completed") row.drawDetails(this.downloadUrl);
    }
  }
}
