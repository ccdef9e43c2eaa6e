-- Every bronze row of the day, with the comma-separated names of the expectations it fails.
-- Spark SQL dialect: the runner transpiles it for DuckDB.
--
-- Text is judged with regular expressions rather than trim() and a lenient cast, because the
-- engines disagree on those: Spark's trim() strips only U+0020 and DuckDB's also strips Unicode
-- spaces (U+00A0, U+3000); Spark casts '1d', '0.5f' and '0x1p-2' to numbers and DuckDB casts
-- '0_0' to one. The patterns below use only syntax that Java regex and RE2 read alike.
--
-- Sources besides the day's rows: same_day_owners holds the rows this day validated before (so
-- a record_id or an agent's label for an item keeps the row that was validated, and perhaps
-- paid, first, whatever files land later), and other_day_records the record_ids validated on any
-- other day (a label is paid on one day only).
{#- A value is blank when it is null or has no visible character: only separators (spaces of
    any width), controls (tabs, line breaks) and format characters (zero-width space, BOM). #}
{%- macro blank(column) -%}
    coalesce({{ column }} rlike '^[\\p{Z}\\p{Cc}\\p{Cf}]*$', true)
{%- endmacro %}
with owned as (
    select
        s.*,
        o.record_id is not null as owned_before,
        d.record_id is not null as validated_on_another_day
    from {{ source('label_submissions') }} as s
    left join {{ source('same_day_owners') }} as o
        on
            s.record_id = o.record_id
            and s.source_file = o.source_file
            and s.source_line = o.source_line
    left join {{ source('other_day_records') }} as d on s.record_id = d.record_id
),

ranked as (
    select
        *,
        row_number() over (
            partition by record_id
            order by case when owned_before then 0 else 1 end, source_file, source_line
        ) as record_rank
    from owned
),

numbered as (
    select
        *,
        -- A plain decimal number: optional sign, optional exponent, spaces (U+0020) around it.
        case
            when confidence rlike '^ *[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)? *$'
                then cast(confidence as double)
        end as confidence_number
    from ranked
),

checked as (
    select
        *,
        case
            when read_error is not null then 'row_readable'
            else concat_ws(
                ',',
                case when {{ blank('record_id') }} then 'record_id_present' end,
                case
                    when
                        not {{ blank('record_id') }}
                        and (record_rank > 1 or validated_on_another_day)
                        then 'record_id_unique'
                end,
                case when {{ blank('agent_id') }} then 'agent_id_present' end,
                case when {{ blank('item_id') }} then 'item_id_present' end,
                case
                    when label is null or label not in ({{ var('label_set') }})
                        then 'label_in_set'
                end,
                case
                    when not {{ blank('confidence') }}
                        and not coalesce(confidence_number between 0 and 1, false)
                        then 'confidence_in_range'
                end
            )
        end as row_failures
    from numbered
),

agent_items as (
    select
        *,
        -- Among an agent's otherwise valid labels of one item, only the first counts.
        row_number() over (
            partition by agent_id, item_id
            order by
                case when row_failures = '' then 0 else 1 end,
                case when owned_before then 0 else 1 end,
                source_file,
                source_line
        ) as agent_item_rank
    from checked
)

select
    record_id,
    item_id,
    agent_id,
    label,
    confidence,
    confidence_number,
    submitted_at,
    source_file,
    source_line,
    read_error,
    raw,
    case
        when row_failures = '' and agent_item_rank > 1 then 'agent_item_unique'
        else row_failures
    end as failed_expectations
from agent_items
