"""`nncli sweep`: hyperparameter search over `nncli train` runs (Optuna for the search; trials as
local processes or as tasks on a Dask cluster). spec: the sweep file; study: the search loop;
executors: where trials run; results: results.csv, best.yaml, sweep.png. Needs nncli[sweep]."""
