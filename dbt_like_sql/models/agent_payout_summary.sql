-- What each agent earned for the day. An agent is eligible when the share of its labels on items
-- with a consensus that agree with that consensus is at least agreement_threshold; an eligible
-- agent earns rate_usdc per agreeing (verified) label. Money stays DECIMAL(38, 6) throughout.
with per_agent as (
    select
        agent_id,
        count(*) as validated_labels,
        count(consensus_label) as labels_with_consensus,
        cast(sum(case when agrees_with_consensus then 1 else 0 end) as bigint) as verified_labels
    from {{ ref('validated_labels') }}
    group by agent_id
),

judged as (
    select
        *,
        labels_with_consensus > 0
        and cast(verified_labels as decimal(38, 6))
        >= cast({{ var('agreement_threshold') }} as decimal(38, 6)) * labels_with_consensus
            as eligible
    from per_agent
)

select
    agent_id,
    validated_labels,
    labels_with_consensus,
    verified_labels,
    case
        when labels_with_consensus > 0
            then cast(verified_labels as double) / labels_with_consensus
    end as agreement_rate,
    eligible,
    cast(
        case
            when eligible
                then cast({{ var('rate_usdc') }} as decimal(38, 6)) * verified_labels
            else 0
        end as decimal(38, 6)
    ) as amount_owed_usdc
from judged
