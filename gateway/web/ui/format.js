// Text for people: durations, sizes, conversions, statuses.

export function duration(ms) {
  if (!(ms >= 0)) return "";
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d`;
}

export function size(bytes) {
  if (typeof bytes !== "number") return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function conversion(c) {
  if (!c) return "";
  const from = c.source_format || "?";
  const to = c.target_format || "?";
  return c.source_format || c.target_format ? `${from} → ${to}` : "";
}

export const ENDED = new Set(["completed", "failed", "canceled"]);

// The badge's words: colour is never the only signal.
export function statusLabel(job) {
  if (job.cancel_requested && !ENDED.has(job.status)) return "cancel requested";
  return job.status;
}

export function percent(job) {
  const p = job.progress && typeof job.progress.percent === "number" ? job.progress.percent : 0;
  return job.status === "completed" ? 100 : Math.max(0, Math.min(100, p));
}

export function time(ms) {
  return new Date(ms).toLocaleString([], {dateStyle: "medium", timeStyle: "long"});
}

// The snapshot's estimate of 100 % (docs/api.md, Time left), as a person says it.
export function timeLeft(job, now) {
  const at = job.progress && job.progress.eta_at;
  if (!at || ENDED.has(job.status)) return "";
  const left = (Date.parse(at) - now) / 1000;
  if (Number.isNaN(left)) return "";
  if (left < 1) return "almost done";
  if (left < 90) return `about ${Math.round(left)} s left`;
  if (left < 90 * 60) return `about ${Math.round(left / 60)} min left`;
  return `about ${Math.round(left / 3600)} h left`;
}
