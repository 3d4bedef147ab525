"""``tinyllm-ray compare``: label-only, single-teacher, TinyLLM, leave-one-out and Mind's Mirror
settings as Ray Tune trials over one rationale store, with a mean ± sd table.

``settings`` (pure: which settings, each as a job config), ``table`` (pure: aggregate,
Markdown, JSON, PNG), ``run`` (Ray: store, teachers' rows, Tune trials, table). The runner
is imported lazily (it pulls in Ray).
"""

from tinyllm_ray.compare.settings import MODES, Setting, settings_for, step_budget, store_config
from tinyllm_ray.compare.table import aggregate, plot_table, render_markdown

__all__ = ["MODES", "Setting", "aggregate", "plot_table", "render_markdown", "settings_for", "step_budget",
           "store_config"]
