-- Rows that pass every expectation, one per record_id, with the item's consensus label.
-- An item's consensus is its most frequent label when that label is unique and the item has at
-- least min_votes labels; otherwise the item has no consensus and its labels neither earn nor
-- count against their agents.
with passed as (
    select * from {{ ref('labels_checked') }} where failed_expectations = ''
),

votes as (
    select item_id, label, count(*) as label_votes
    from passed
    group by item_id, label
),

scored as (
    select
        item_id,
        label,
        label_votes,
        sum(label_votes) over (partition by item_id) as item_votes,
        max(label_votes) over (partition by item_id) as top_votes
    from votes
),

consensus as (
    select item_id, max(label) as consensus_label
    from scored
    where label_votes = top_votes
    group by item_id
    having count(*) = 1 and max(item_votes) >= {{ var('min_votes') }}
)

select
    p.record_id,
    p.item_id,
    p.agent_id,
    p.label,
    p.confidence_number as confidence,
    p.submitted_at,
    p.source_file,
    p.source_line,
    c.consensus_label,
    p.label = c.consensus_label as agrees_with_consensus
from passed as p
left join consensus as c on p.item_id = c.item_id
