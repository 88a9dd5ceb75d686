"""Daily store housekeeping: clean up writes that were killed before they finished.

A writer killed mid-write cannot clean up after itself: locally it leaves an orphaned
`.tmp-*.part` file beside the key (readers and listings skip it), on S3 an open multipart
upload (invisible, but its parts are billed). Nothing reaches a final key either way; this job
removes the leftovers once they are older than a day, so no in-flight write is disturbed.
"""
import dagster as dg

from resources.storage import ArtifactStore


class SweepConfig(dg.Config):
    older_than_hours: float = 24.0  # never touch a write that may still be in flight


@dg.op(description="Remove orphaned local temp files / abort stale S3 multipart uploads.")
def sweep_incomplete_writes(context: dg.OpExecutionContext, config: SweepConfig, store: ArtifactStore) -> list[str]:
    removed = store.sweep_incomplete(older_than_s=config.older_than_hours * 3600)
    for item in removed:
        context.log.info(f"removed incomplete write {item}")
    context.add_output_metadata({"removed": len(removed), "older_than_hours": config.older_than_hours,
                                 "items": "\n".join(removed[:50]) or "none"})
    return removed


@dg.job(description="Clean up writes killed before they finished (orphaned temp files, open multipart uploads).")
def store_housekeeping_job():
    sweep_incomplete_writes()


store_housekeeping_schedule = dg.ScheduleDefinition(job=store_housekeeping_job, cron_schedule="30 3 * * *",
                                                    default_status=dg.DefaultScheduleStatus.RUNNING)
