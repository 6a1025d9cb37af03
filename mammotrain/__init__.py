"""mammotrain: streaming PyTorch training on mammoprep shards.

Modules (torch is imported by these, never by :mod:`mammoprep`):

* :mod:`mammotrain.tasks` - task registry (:class:`~mammotrain.tasks.TaskSpec`, ``get_task``);
* :mod:`mammotrain.data` - manifest planning, patient-grouped splits, the webdataset stream
  (``ShardStream``) and exact-step epochs (``EpochLoader``);
* :mod:`mammotrain.models` - timm backbones, ``MultiViewClassifier``, local weights;
* :mod:`mammotrain.gradcam` - Grad-CAM on the backbones' last feature maps;
* :mod:`mammotrain.metrics` - ACC/AUC/precision/recall/F1/specificity, patient-level
  bootstrap intervals, paired bootstrap and DeLong tests, RSNA's pF1 (NumPy);
* :mod:`mammotrain.dicom_input` - DICOM files as ``predict --dicom`` input (rows that join
  back to the files, rejects with reasons);
* :mod:`mammotrain.jsonio` - strict JSON (``null``, never ``NaN``) for every file written;
* :mod:`mammotrain.train` - ``TrainConfig``, ``train_fold``, ``run_cv`` (DDP under torchrun);
* :mod:`mammotrain.report` - tables, ROC curves, energy/vendor AUC, ablation, combined report;
* :mod:`mammotrain.modelfile` - self-contained ``best.safetensors`` + ``best.json`` model files;
* :mod:`mammotrain.export` - ONNX export checked with onnxruntime;
* :mod:`mammotrain.curves` - ``history.csv`` and TensorBoard event files per fold;
* :mod:`mammotrain.cli` - the ``mammotrain`` command.
"""

__version__ = "0.1.0"
