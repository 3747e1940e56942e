"""When issues go out: planning (editor actions), firing, recurring digests, the daemon.

The package's public names, for the CLI and the tests."""

from dispatch.config.cron import cron_trigger, fire_times
from dispatch.schedule.daemon import Daemon, tick
from dispatch.schedule.digests import RunOutcome, build_digest, digests_due, next_digest
from dispatch.schedule.firing import Event, EventKind, fire
from dispatch.schedule.overview import Overview, schedule_overview
from dispatch.schedule.planning import (
                                        ArchiveChange,
                                        When,
                                        cancel_issue,
                                        hide_issue,
                                        move_issue,
                                        pause_issue,
                                        plan_time,
                                        resume_issue,
                                        schedule_issue,
                                        show_issue,
                                        validate,
)

__all__ = ["ArchiveChange", "Daemon", "Event", "EventKind", "Overview", "RunOutcome", "When",
           "build_digest",
           "cancel_issue", "cron_trigger", "digests_due", "fire", "fire_times", "hide_issue",
           "move_issue", "next_digest", "pause_issue", "plan_time", "resume_issue",
           "schedule_issue", "schedule_overview", "show_issue", "tick", "validate"]
