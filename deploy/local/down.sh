#!/usr/bin/env bash
# `make down`: stop what `make up` started (services, then the broker and the store), nothing else.
source "$(dirname "$0")/lib.sh"
HERE="$(dirname "$0")"
"$HERE/services.sh" stop
"$HERE/infra.sh" stop
