"""The study machinery: sweeps over a grid of runs (``sweep``), the tidy results table
(``collect``), the policy capacity study (``policy_study``), the report (``report``) and the
demo spec (``demo``)."""
