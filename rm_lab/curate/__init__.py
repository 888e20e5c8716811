"""Curation before training (DESIGN.md, "Data consolidation"): scrub identifiers, drop duplicates,
drop lopsided preference pairs, diversity-sample by embedding clusters to a target traffic mix.
`pipeline.curate` runs the steps; each module holds one step and reports what it removed and why."""
