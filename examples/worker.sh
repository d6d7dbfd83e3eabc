#!/bin/sh
# A pretend conversion worker in POSIX sh: no Python, only valkey-cli or redis-cli (7+).
#
#   REDIS_URL=redis://127.0.0.1:PORT/0 sh examples/worker.sh JOB_ID
#
# It creates the job (or takes it over if it exists and is still queued, as when a client
# created it with POST /v1/jobs), starts it, reports three phases with their percent and
# completes it with a (pretend) output URL, sleeping STEP_SECONDS between steps. Every
# change is one EVALSHA of gateway/contract/update.lua, loaded once with SCRIPT LOAD
# (docs/workers.md describes its KEYS, ARGV and replies).
#
# Exit status: 0 when the job completed, or was canceled because a user asked for it
# (cancel_requested); 1 when the update script refused a change (the refusal is printed:
# code, message and the job's status); 2 for a usage error or a Redis that does not answer.
#
# Environment: REDIS_URL (required, database 0); TENANT (default: default); STEP_SECONDS
# (default 1; fractions where `sleep` takes them); REDIS_CLI (default: valkey-cli, else
# redis-cli, found on PATH); RETENTION_SECONDS (86400), OUTPUT_TTL_SECONDS (3600) and
# ACTIVE_TTL_SECONDS (604800), the lifetimes the Python library uses by default.

set -u

me=worker.sh
usage() {
    echo "usage: REDIS_URL=redis://HOST:PORT/0 sh examples/worker.sh JOB_ID" >&2
    exit 2
}
[ $# -eq 1 ] && [ -n "$1" ] || usage
job_id=$1
if [ -z "${REDIS_URL:-}" ]; then
    echo "$me: set REDIS_URL, e.g. redis://127.0.0.1:6379/0" >&2
    exit 2
fi
tenant=${TENANT:-default}
step=${STEP_SECONDS:-1}
retention=${RETENTION_SECONDS:-86400}
output_ttl=${OUTPUT_TTL_SECONDS:-3600}
active_ttl=${ACTIVE_TTL_SECONDS:-604800}

# The update script checks that every key belongs to one tenant, not what a tenant may be
# called; the gateway only knows tenants of this shape (lower case, no brace).
case $tenant in
    [a-z0-9]*) ;;
    *) echo "$me: TENANT $tenant: 1-64 characters of a-z, 0-9, _ and -" >&2; exit 2 ;;
esac
case $tenant in
    *[!a-z0-9_-]*) echo "$me: TENANT $tenant: 1-64 characters of a-z, 0-9, _ and -" >&2; exit 2 ;;
esac
[ ${#tenant} -le 64 ] || { echo "$me: TENANT is longer than 64 characters" >&2; exit 2; }

# Database 0 only: pub/sub ignores the database, so two databases' streams would mix.
rest=${REDIS_URL#*://}
rest=${rest##*@}
case $rest in
    */*) db=${rest#*/}; db=${db%%\?*} ;;
    *) db= ;;
esac
case $db in
    '' | 0) ;;
    *) echo "$me: REDIS_URL selects database $db; the gateway and its workers use 0" >&2; exit 2 ;;
esac

if [ -z "${REDIS_CLI:-}" ]; then
    if command -v valkey-cli >/dev/null 2>&1; then
        REDIS_CLI=valkey-cli
    elif command -v redis-cli >/dev/null 2>&1; then
        REDIS_CLI=redis-cli
    else
        echo "$me: no valkey-cli or redis-cli on PATH; set REDIS_CLI to one" >&2
        exit 2
    fi
fi

lua="$(dirname "$0")/../gateway/contract/update.lua"
errors=$(mktemp) || exit 2
trap 'rm -f "$errors"' EXIT
trap 'exit 2' HUP INT TERM

# --raw: one line per element of the reply; -e: exit status 1 on an error reply.
cli() {
    "$REDIS_CLI" -u "$REDIS_URL" --no-auth-warning --raw -e "$@" 2>"$errors"
}

load() {
    if ! sha=$(cli -x SCRIPT LOAD <"$lua"); then
        echo "$me: SCRIPT LOAD failed: $(cat "$errors")" >&2
        exit 2
    fi
}

# KEYS, in the order update.lua reads them; the job's channel has the job key's name.
prefix="gw:{$tenant}:"
job_key="${prefix}job:$job_id"

# update OP PAYLOAD: run one change. Sets ok (1 accepted, 0 refused) and then
#   accepted: event_id, event (status, progress or deleted), data (the snapshot), changed
#   refused:  code, message, status (the job's current status; empty if it has none)
update() {
    nonce=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
    tries=0
    while :; do
        if reply=$(cli EVALSHA "$sha" 6 \
            "$job_key" "${prefix}index" "${prefix}seq" "${prefix}epoch" "${prefix}active" \
            "${prefix}expiry" \
            "$1" "$job_id" "$2" "$job_key" "${prefix}jobs" "$retention" "$output_ttl" \
            "$nonce" PUBLISH "$active_ttl"); then
            break
        fi
        # The server forgot the script (a restart, SCRIPT FLUSH): load it again, once.
        if [ $tries -eq 0 ] && grep -q NOSCRIPT "$errors"; then
            tries=1
            load
            continue
        fi
        echo "$me: $1 of job $job_id: $(cat "$errors")" >&2
        exit 2
    done
    {
        IFS= read -r ok
        IFS= read -r second
        IFS= read -r third
        IFS= read -r fourth
        IFS= read -r fifth
    } <<EOF
$reply
EOF
    case $ok in
        1)
            event_id=$second event=$third data=$fourth changed=$fifth
            # The snapshot's fields come in a fixed order: status second, version last.
            version=$(printf '%s\n' "$data" | sed -n 's/.*"version":\([0-9]*\)}$/\1/p')
            status=$(printf '%s\n' "$data" | sed -n 's/^{"job_id":"[^"]*","status":"\([a-z]*\)".*/\1/p')
            ;;
        0)
            code=$second message=$third status=$fourth
            ;;
        *)
            echo "$me: $1 of job $job_id: unexpected reply: $reply" >&2
            exit 2
            ;;
    esac
}

# A refused change ends the worker: print what the script said, exit 1.
refused() {
    echo "$me: $1 of job $job_id refused: $code: $message${status:+ (status: $status)}" >&2
    exit 1
}

report() {
    update "$1" "$2"
    [ "$ok" = 1 ] || refused "$1"
    if [ "$changed" = 1 ]; then
        echo "$event_id $event v$version $status"
    fi
}

# A user asked to cancel (POST /v1/jobs/ID/cancel sets cancel_requested on a running
# job): stop the work and say so.
stop_if_asked() {
    case $data in
        *'"cancel_requested":true'*)
            report cancel '{}'
            echo "job $job_id: canceled as asked (version $version)"
            exit 0
            ;;
    esac
}

load

# Texts in these payloads hold no quote, backslash or control character; a worker that
# sends other text must escape it as JSON does.
update create '{"conversion":{"source_format":"docx","target_format":"pdf","original_filename":"report.docx","source_size_bytes":48213}}'
if [ "$ok" = 1 ]; then
    echo "$event_id $event v$version $status"
elif [ "$code" = already_exists ] && [ "$status" = queued ]; then
    echo "job $job_id exists and is queued: working on it"
else
    refused create
fi
sleep "$step"

report start '{"phase":"Loading document"}'
stop_if_asked
sleep "$step"
report progress '{"percent":20,"phase":"Rendering pages"}'
stop_if_asked
sleep "$step"
report progress '{"percent":50}'
stop_if_asked
sleep "$step"
report progress '{"percent":80,"phase":"Writing PDF","metrics":{"pages":12}}'
stop_if_asked
sleep "$step"

report complete "{\"output\":{\"file_url\":\"https://files.example/$job_id/report.pdf?signature=pretend\",\"file_name\":\"report.pdf\",\"content_type\":\"application/pdf\",\"file_size_bytes\":612345,\"file_count\":1}}"
echo "job $job_id: $status (version $version)"
printf '%s\n' "$data"
