"""mammotrain: streaming PyTorch training on mammoprep shards.

Modules (torch is imported by these, never by :mod:`mammoprep`):

* :mod:`mammotrain.tasks` - the Task interface and registry (classification, detection:
  model, criterion, post-processing, metrics, figures, export outputs; ``get_task``);
* :mod:`mammotrain.options` - every training option declared once, in groups (data, model,
  optimisation, evaluation, runtime); the CLI options are built from it;
* :mod:`mammotrain.config` - ``TrainConfig`` (the groups' fields, flat in ``config.json``);
* :mod:`mammotrain.data` - manifest planning and patient-grouped splits;
* :mod:`mammotrain.preprocess` - the loader's resize / letterbox / normalisation;
* :mod:`mammotrain.stream` - the webdataset stream (``ShardStream``) and exact-step epochs
  (``EpochLoader``);
* :mod:`mammotrain.models` - timm backbones, ``MultiViewClassifier``, local weights;
* :mod:`mammotrain.gradcam` - Grad-CAM on the backbones' last feature maps;
* :mod:`mammotrain.metrics` - ACC/AUC/precision/recall/F1/specificity, patient-level
  bootstrap intervals, paired bootstrap and DeLong tests, RSNA's pF1 (NumPy);
* :mod:`mammotrain.engine` - the fit loop (``fit``: ``train_fold``, ``run_cv``),
  evaluation and inference, every checkpoint / model-file format (``checkpoint``), DDP
  (``distributed``), the optimiser step and lr schedules;
* :mod:`mammotrain.dicom_input` - DICOM files as ``predict --dicom`` input (rows that join
  back to the files, rejects with reasons);
* :mod:`mammotrain.jsonio` - strict JSON (``null``, never ``NaN``) and atomic writes;
* :mod:`mammotrain.report` - a run's tables, ROC curves, energy/vendor AUC;
* :mod:`mammotrain.compare` - the ablation and the combined report over several runs;
* :mod:`mammotrain.figures` - Grad-CAM and detection figures of test examples;
* :mod:`mammotrain.export` - ONNX export checked with onnxruntime;
* :mod:`mammotrain.curves` - ``history.csv`` and TensorBoard event files per fold;
* :mod:`mammotrain.cli` - the ``mammotrain`` command.
"""

__version__ = "0.1.0"
