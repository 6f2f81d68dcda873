#!/bin/sh
# Refuses the stack's settings while a secret is missing, still a placeholder, short, reused or
# not URL-safe, or an account name collides. The `check-env` service of docker/compose.yaml runs
# it before any other service starts; on the host: sh docker/check-env.sh docker/.env
# Exit status 0: the settings may be used; 1: they may not (every reason is printed).
set -u

# every secret of the stack; the first three are object-store secret keys (MinIO: at most 40 characters)
SECRETS="MINIO_ROOT_PASSWORD LAKE_SECRET_KEY MLFLOW_ARTIFACTS_SECRET_KEY POSTGRES_PASSWORD MLFLOW_ADMIN_PASSWORD MLFLOW_RUNS_PASSWORD MLFLOW_FLASK_SECRET_KEY"
S3_SECRETS="MINIO_ROOT_PASSWORD LAKE_SECRET_KEY MLFLOW_ARTIFACTS_SECRET_KEY"
S3_ACCESS_KEYS="MINIO_ROOT_USER LAKE_ACCESS_KEY MLFLOW_ARTIFACTS_ACCESS_KEY"
MLFLOW_USERS="MLFLOW_ADMIN_USER MLFLOW_RUNS_USER"
MIN_LENGTH=16

if [ $# -gt 0 ]; then  # an env file: KEY=VALUE lines, read as compose reads them (no interpolation)
  [ -r "$1" ] || { echo "check-env: cannot read $1" >&2; exit 1; }
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in '' | '#'*) continue ;; esac
    key=${line%%=*}
    value=${line#*=}
    case $key in '' | *[!A-Za-z0-9_]*) continue ;; esac
    case $value in
      \"*\") value=${value#\"}; value=${value%\"} ;;
      \'*\') value=${value#\'}; value=${value%\'} ;;
      *) value=${value%% \#*} ;;
    esac
    export "$key=$value"
  done <"$1"
fi

failed=0
refuse() {
  echo "check-env: $1" >&2
  failed=1
}
get() { eval "printf '%s' \"\${$1-}\""; }

for name in $SECRETS; do
  value=$(get "$name")
  if [ -z "$value" ]; then
    refuse "$name is not set"
    continue
  fi
  lower=$(printf '%s' "$value" | tr '[:upper:]' '[:lower:]')
  case $lower in
    *change*me* | *placeholder* | *example* | *password* | *secret* | *minioadmin*)
      refuse "$name is a placeholder: set a random value (openssl rand -hex 20)" ;;
  esac
  [ ${#value} -ge $MIN_LENGTH ] || refuse "$name is shorter than $MIN_LENGTH characters"
  case $value in
    *[!A-Za-z0-9._~-]*) refuse "$name may hold only letters, digits and . _ ~ - (it goes into URLs)" ;;
  esac
done
for name in $S3_SECRETS; do
  value=$(get "$name")
  [ ${#value} -le 40 ] || refuse "$name is longer than 40 characters (the object store's limit)"
done

seen=""  # no secret may be another's: a leaked run credential must not open the store or the registry
for name in $SECRETS; do
  value=$(get "$name")
  [ -n "$value" ] || continue
  for other in $seen; do
    [ "$(get "$other")" != "$value" ] || refuse "$name is the same as $other: every secret must be its own"
  done
  seen="$seen $name"
done

check_names() {  # check_names MIN MAX NAME...: set, length in [MIN, MAX], pairwise distinct
  min=$1 max=$2
  shift 2
  seen=""
  for name in "$@"; do
    value=$(get "$name")
    if [ ${#value} -lt "$min" ] || [ ${#value} -gt "$max" ]; then
      refuse "$name must be $min to $max characters"
    fi
    [ -n "$value" ] || continue
    for other in $seen; do
      [ "$(get "$other")" != "$value" ] || refuse "$name is the same account as $other"
    done
    seen="$seen $name"
  done
}
# shellcheck disable=SC2086  # word splitting of the lists is intended
check_names 3 20 $S3_ACCESS_KEYS
# shellcheck disable=SC2086
check_names 1 64 $MLFLOW_USERS

if [ -n "${DOCKER_GID+set}" ]; then
  case $DOCKER_GID in '' | *[!0-9]*) refuse "DOCKER_GID must be the numeric group id of the Docker socket" ;; esac
fi

if [ $failed -ne 0 ]; then
  echo "check-env: refusing these settings: edit docker/.env (docker/.env.example lists every setting)" >&2
  exit 1
fi
echo "check-env: settings accepted"
