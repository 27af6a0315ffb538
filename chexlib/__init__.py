"""chexlib: explain multi-label chest-radiograph predictions with LRP and Grad-CAM.

The package behind the chexlib notebook series, one concept per module (the README's folder map
holds the same list; ``tests/test_module_map.py`` keeps both complete):

data: labels, images, masks, the phantom
chexlib.observations                  the 14 CheXpert observations (CSV order) and the uncertainty policies
chexlib.data                          CheXpert-format data: labels, splits, images, the Dataset and image cache
chexlib.data.labels                   read and validate CheXpert-format label files; label_distribution
chexlib.data.splits                   patient-level split of train.csv into training and internal validation
chexlib.data.images                   find and decode the images of a CheXpert-format folder
chexlib.data.dataset                  the torch Dataset over a CheXpert-format folder (real or phantom)
chexlib.data.summary                  summaries of a label table: co-occurrence, policy effects, examples
chexlib.data.cache                    the decode-and-resize-once image cache (a uint8 memory map)
chexlib.data.cache.key                which label file, data root, size and image files a cache holds
chexlib.data.cache.checksums          when a built cache is valid: metadata and per-chunk checksums
chexlib.data.cache.journal            the journaled build: an interrupted build resumes chunk by chunk
chexlib.data.cache.decode             decoding a build's chunks, in this process or a process pool
chexlib.data.cache.image_cache        the ImageCache object: open a valid cache or build it, under a lock
chexlib.masks                         ground-truth masks: COCO run-length encoding and CheXlocalize files
chexlib.masks.rle                     COCO run-length encoding of binary masks, in numpy
chexlib.masks.chexlocalize            CheXlocalize's JSON files: image ids, reading, writing, a split's masks
chexlib.masks.resize                  a mask resized into another frame (the model's square input)
chexlib.phantom                       the phantom data set: real label statistics, drawn findings, masks
chexlib.phantom.__main__              python -m chexlib.phantom --out DIR --n-train N --n-valid N --seed S
chexlib.phantom.generate              write a complete phantom: images, CSVs, masks and phantom.json
chexlib.phantom.sampling              label rows sampled from the real CheXpert train.csv
chexlib.phantom.render                render one radiograph: anatomy, findings, exposure, noise, marker
chexlib.phantom.drain                 the planted chest drain (a pneumothorax confounder) and its mask
chexlib.phantom.counterfactual        a stored phantom image rendered again without its drain or marker
chexlib.phantom.anatomy               the body: habitus, lungs, heart, mediastinum, diaphragm
chexlib.phantom.lungs                 real lung-field shapes from torchxrayvision's lung masks
chexlib.phantom.skeleton              ribs, clavicles, spine, scapulae and humeral heads
chexlib.phantom.vessels               pulmonary vascular markings
chexlib.phantom.findings              one drawing function per CheXpert observation
chexlib.phantom.devices               support devices (tubes, lines, pacemaker, ECG leads) and fractures
chexlib.phantom.draw                  vectorised drawing primitives
chexlib.reference                     the study's and the CheXpert paper's published numbers

model and training
chexlib.densenet                      the DenseNet-121 network with an explainable head; its weight names
chexlib.model                         where a DenseNet-121's weights come from: random, ImageNet, a file
chexlib.checkpoint                    atomic, weights-only checkpoints: save, load, model_from_checkpoint
chexlib.checkpoint_format             what a checkpoint holds and the checks a loaded one must pass
chexlib.torchfile                     safe reading of torch files (weights_only=True) with clear errors
chexlib.fingerprint                   a short hash that tells two sets of weights apart (the map store's key)
chexlib.device                        devices and precision: select_device, autocast dtype (CPU bf16 detected), channels-last
chexlib.rng                           seeding every random generator; their state for a checkpoint
chexlib.train                         training: in a notebook, from the command line, under torchrun
chexlib.train.__main__                python -m chexlib.train --params FILE.yaml (the command line)
chexlib.train.config                  TrainConfig (what a run is given) and TrainResult (what it gives back)
chexlib.train.steps                   one optimisation step: the epoch's batches, the masked loss, the step
chexlib.train.loop                    fit: the study's recipe, resumable and deterministic
chexlib.train.resume                  resume points: the checkpoints training writes and when one resumes
chexlib.train.prediction              predict: logits and probabilities of a dataset, in order
chexlib.train.out_of_memory           the out-of-memory error that says what to change
chexlib.train.distributed             torch.distributed and DDP: process group, sharded batch sampler
chexlib.train.launch                  a run's data and model from its parameters; in-process or torchrun

the classifier's evaluation (notebook 03)
chexlib.metrics                       evaluation of the 14 sigmoid outputs
chexlib.metrics._inputs               checks shared by every metric: labels, probabilities, classes, groups
chexlib.metrics._ranking              tied-score blocks: the common step of AUROC, AUPRC and thresholds
chexlib.metrics.discrimination        per-class AUROC and AUPRC
chexlib.metrics.bootstrap             patient-bootstrap confidence intervals of AUROC and AUPRC
chexlib.metrics.thresholds            per-class operating thresholds and TP/FP/FN/TN outcomes
chexlib.metrics.calibration           reliability bins and Brier scores
chexlib.metrics.table                 notebook 03's per-class table and its summary means
chexlib.artefacts                     the run folder's result files: formats, writing and reading
chexlib.reported                      a run's reported images with predictions, outcomes and masks
chexlib.cases                         which predictions to explain: images by observation and outcome

explanations (notebooks 04-05)
chexlib.methods                       the registry of explanation methods (importable without torch)
chexlib.display_names                 method and layer names for people (controls, captions, titles)
chexlib.model_card                    which model a notebook explains, in one paragraph (notebooks 04-07)
chexlib.notebook_display              tables and warnings readable in a notebook (whole text, one format)
chexlib.explain                       explanations of the DenseNet-121's predictions
chexlib.explain.inputs                an explainable copy of the model, class names to indices
chexlib.explain.canonizers            DenseNet-121 with every BatchNorm merged into a linear layer
chexlib.explain.composites            named LRP composites: which zennit rule explains which layer
chexlib.explain.lrp                   LRP heatmaps of any set of classes from one forward pass
chexlib.explain.shared_forward        the rules' class-independent work, done once per forward pass
chexlib.explain.kept_forward          a rule's modified forward outputs, skipping known convolutions
chexlib.explain.conservation          where each logit's relevance goes: pixels, each bias, epsilon
chexlib.explain.cam                   the class-activation-map algorithm Grad-CAM and Grad-CAM++ share
chexlib.explain.gradcam               Grad-CAM: spatially averaged gradients as channel weights
chexlib.explain.gradcam_pp            Grad-CAM++: pixel-weighted positive gradients
chexlib.explain.combined              LRP gated by Grad-CAM
chexlib.explain.baseline              maps that explain nothing: the random map, the chance level
chexlib.explain.dispatch              any registered method by name: explain, cam_maps_by_layer
chexlib.explain.store                 the run folder's heatmap store: one float16 file per method and image
chexlib.explain.reported_maps         maps of a run's reported images: gallery explainers, filling the store

how good a heatmap is (notebook 06)
chexlib.heatmap_quality               heatmap quality, batched over maps (the classifier's is chexlib.metrics)
chexlib.heatmap_quality.localisation  pointing game, relevance mass and rank accuracy, Otsu IoU, chance
chexlib.heatmap_quality.faithfulness  region perturbation (MoRF / LeRF) and AOPC
chexlib.heatmap_quality.sanity        cascading model-parameter randomisation
chexlib.heatmap_quality.artefacts     grid artefacts of heatmaps: the blockiness ratio
chexlib.heatmap_quality.compare       notebook 06: the pairs, every method's maps and scores per pair
chexlib.heatmap_quality.summaries     notebook 06: patient-clustered intervals, blank rate and n, verdicts, key insights
chexlib.heatmap_quality.notes         sentences under a figure: inside the outline, blue, class likeness, detection
chexlib.heatmap_quality.chexlocalize  CheXlocalize's protocol: Otsu segmentation, hit rate, mIoU, bootstrap CIs

the shortcut lab (a planted confounder: does the model use it, which explanation shows it)
chexlib.shortcut                      the shortcut lab's measures (notebook 07)
chexlib.shortcut.subgroups            finding with / without drain, drain without finding, neither
chexlib.shortcut.strata               hidden stratification: AUROC and rates per subgroup, patient intervals
chexlib.shortcut.causal               the causal test: logit change when the confounder is removed
chexlib.shortcut.reveal               each method's relevance on confounder and finding vs the causal effect
chexlib.shortcut.lab                  notebook 07's steps on a run: subgroups, counterfactual inputs, effects, maps
chexlib.shortcut.insights             notebook 07's key insights, claiming only what the intervals support

figures and the browser
chexlib.plots                         figures shared by the notebooks (each returns a Figure)
chexlib.plots.data                    label distributions, co-occurrence, demographics, galleries
chexlib.plots.training                learning curves
chexlib.plots.metrics                 plots of chexlib.metrics: ROC/PR, reliability, outcomes, AUROC vs study
chexlib.plots.heatmap_arrays          heatmaps as arrays: symmetric colour scale, RGB rendering
chexlib.plots.heatmaps                signed relevance maps over the radiograph, per class, method, image
chexlib.plots.galleries               galleries of correct and incorrect predictions; methods side by side
chexlib.plots.heatmap_quality         plots of chexlib.heatmap_quality: localisation, curves, summary
chexlib.plots.relevance               where LRP relevance goes, grid artefacts (notebook 04)
chexlib.browser                       the heatmap browser: reported images by class, outcome and method
chexlib.browser.source                maps by method: from the store, else computed and stored
chexlib.browser.render                what a browser state shows, as PNG bytes and a caption
chexlib.browser.widget                the ipywidgets controls; HeatmapBrowser.from_run

running the series
chexlib.__main__                      python -m chexlib run | params | presets | methods
chexlib.params                        the parameter schema: names, defaults, allowed values; presets/*.yaml
chexlib.project                       the project folder relative paths resolve against; ensure_data
chexlib.run                           RunFolder: the one place that names every file of a run
chexlib.runlock                       one writer per run folder
chexlib.session                       what each notebook does first: start, open_run (model, reported, store)
chexlib.runner                        papermill execution of the series into a run folder
chexlib.progress                      progress bars for JupyterLab and papermill logs
chexlib.files                         atomic file writing and advisory file locks
chexlib.errors                        chexlib's exceptions
chexlib.demo                          a run folder without training, for tests, benchmarks and the browser
chexlib                               the package (this map)
"""

__version__ = "0.1.0"

from chexlib.observations import (  # noqa: E402
    COMPETITION_OBSERVATIONS,
    OBSERVATIONS,
    UNCERTAINTY_POLICIES,
)

__all__ = ["OBSERVATIONS", "COMPETITION_OBSERVATIONS", "UNCERTAINTY_POLICIES", "__version__"]
