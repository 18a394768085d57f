"""Prometheus metrics of the sync service."""

from prometheus_client import Counter, Gauge

KLAVIYO_REQUESTS = Counter(
    "audiences_sync_klaviyo_requests_total", "Requests sent to Klaviyo, by outcome", ["outcome"]
)
KLAVIYO_PAGES = Counter(
    "audiences_sync_klaviyo_pages_total", "Pages of list profiles pulled from Klaviyo"
)
KLAVIYO_THROTTLED = Counter(
    "audiences_sync_klaviyo_throttled_total", "429 answers met (each honoured via Retry-After)"
)
ROWS_IMPORTED = Counter("audiences_sync_rows_imported_total", "CSV rows imported into static lists")
ROWS_FAILED = Counter("audiences_sync_rows_failed_total", "CSV rows rejected as invalid")
ROWS_EXPORTED = Counter("audiences_sync_rows_exported_total", "Members written to unload files")
MEMBERSHIP_EVENTS = Counter(
    "audiences_sync_list_events_total", "List membership events published", ["member", "source"]
)
JOBS = Counter("audiences_sync_jobs_total", "Work finished, by kind and status", ["kind", "status"])
JOBS_RUNNING = Gauge("audiences_sync_jobs_running", "Work in progress in this process")
DEAD_LETTERS = Counter("audiences_sync_dead_letters_total", "Commands sent to the dead letters")
SCHEDULED_SLOTS = Counter(
    "audiences_sync_scheduled_slots_total", "Scheduled slots this process won and ran", ["action"]
)
