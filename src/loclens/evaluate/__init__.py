"""Evaluation: answering (ranking or generation), the metrics, the localization analysis and
the ablation tables.

- ``metrics``: the metric definitions (the one place they are defined);
- ``tags``: localization categories of a question;
- ``answer``: predictions of a trained model, written with their scores;
- ``analysis``: one run's predictions -> metrics per dataset, pooled, and per category;
- ``grid``: the ablation cells (lens sources x phase-1 loss x pixel shuffle) and baselines;
- ``tables`` / ``plots``: Tables 1-3 (markdown + JSON, mean and spread over seeds), gain plot.
"""
