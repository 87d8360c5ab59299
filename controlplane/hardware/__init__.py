"""Hardware facts both modes need: model and GPU catalogues (`specs`), what a replica's memory
holds (`memory_plan`), KV bytes per token (`kv`) and the iteration-profile file format
(`profile_format`). Pure arithmetic: no torch, no I/O."""
