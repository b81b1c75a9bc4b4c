"""The planning commands, htools' counterparts: `corral balance` (hbal; offline in
`balance`, live in `balance_live`, the report both print in `balance_report`) and
`corral capacity|export|node reboot-plan` (hspace, the htools text format, hroller;
`plan_tools`). Must not move anything itself: `balance --apply` submits jobs.
"""
