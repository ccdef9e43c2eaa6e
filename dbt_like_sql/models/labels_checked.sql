-- Every bronze row of the day, with the comma-separated names of the expectations it fails.
-- Spark SQL dialect: the runner transpiles it for DuckDB.
with ranked as (
    select
        s.*,
        row_number() over (
            partition by record_id order by source_file, source_line
        ) as record_rank
    from {{ source('label_submissions') }} as s
)

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
    case
        when read_error is not null then 'row_readable'
        else concat_ws(
            ',',
            case when record_id is null or trim(record_id) = '' then 'record_id_present' end,
            case
                when record_id is not null and trim(record_id) <> '' and record_rank > 1
                    then 'record_id_unique'
            end,
            case when agent_id is null or trim(agent_id) = '' then 'agent_id_present' end,
            case when item_id is null or trim(item_id) = '' then 'item_id_present' end,
            case
                when label is null or label not in ({{ var('label_set') }}) then 'label_in_set'
            end,
            case
                when confidence is not null
                    and trim(confidence) <> ''
                    and not coalesce(try_cast(confidence as double) between 0 and 1, false)
                    then 'confidence_in_range'
            end
        )
    end as failed_expectations
from ranked
