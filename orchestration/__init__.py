"""The Dagster wiring: the code location (definitions), the resources per deployment, jobs,
schedules, sensors and partitions. The science lives in pipeline/, the asset bodies in assets/."""
