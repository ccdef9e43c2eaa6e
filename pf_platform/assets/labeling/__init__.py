"""Label submissions in, validated and quarantined labels out."""
