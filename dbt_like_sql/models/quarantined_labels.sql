-- Rows that fail at least one expectation, as received, with the names of what they failed.
select
    record_id,
    item_id,
    agent_id,
    label,
    confidence,
    submitted_at,
    source_file,
    source_line,
    read_error,
    raw,
    failed_expectations
from {{ ref('labels_checked') }}
where failed_expectations <> ''
