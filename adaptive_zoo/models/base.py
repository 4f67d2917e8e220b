"""What every model of the zoo shares: the images it takes, its classes, the
input checks, Keras' training loop made safe and the base of its config."""

import functools
import inspect
import os

import keras
import numpy as np

from adaptive_zoo.checks import positive_integer
from adaptive_zoo.models.inputs import (
    as_float_images, check_class_labels, check_image_batch, check_label_spec, checked_label_batches,
    checked_python_batches, label_error, labeled_batches)

__all__ = ["ZooModel"]


def _keras_loop(method, labeled=False, name=None):
    """Keras' `fit`, `evaluate` or `predict` for a zoo model (or our own loop
    in their place, `name` the method it serves): the images' shape checked
    first where the data shows it (`_check_data`), for `fit` and `evaluate`
    (`labeled`) the labels too (`_with_labels_checked`), and the variables
    left usable where it raises on JAX (`_get_jax_state`)."""
    name = name or method.__name__
    counts = _count_arguments(method)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        for argument, position in counts:
            value = args[position] if len(args) > position else kwargs.get(argument)
            if value is not None:
                positive_integer(value, argument)
        self._check_data(args[0] if args else kwargs.get("x"), name)
        if labeled:
            args, kwargs = self._with_labels_checked(args, kwargs)
        try:
            return method(self, *args, **kwargs)
        except BaseException as error:
            self._put_back_handed_out_values()
            clear = label_error(error)
            if clear is not None:
                raise clear from error
            raise
        finally:
            self._keep_handed_out(())

    return wrapper


def _count_arguments(method):
    """`(name, position among the arguments after self)` of `method`'s
    `batch_size` and `steps`: each None or a positive integer. Keras' own
    loops took `batch_size=0` for its default of 32 and failed on -1 or 2.5
    with an `UnboundLocalError` or a `TypeError` about slices."""
    names = list(inspect.signature(method).parameters)[1:]
    return [(n, names.index(n)) for n in ("batch_size", "steps") if n in names]


def _class_id_loss(loss):
    """`(True, ignore_class)` where the compiled `loss` is sparse categorical
    cross-entropy (an instance, or by name: `"sparse_categorical_crossentropy"`,
    `"SparseCategoricalCrossentropy"`, Keras' function), which takes one
    class id per image; else `(False, None)`."""
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except ValueError:
            return False, None
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return True, loss.get_config().get("ignore_class")
    return loss is keras.losses.sparse_categorical_crossentropy, None


def _check_counts(images, labels, weights):
    """A `ValueError` unless `labels` and `weights` (or None) have one row
    per image, `images` of them (a budgeted `evaluate`'s arrays or batch;
    the loss failed on them with the backend's own shape error)."""
    for what, values in (("labels", labels), ("sample weights", weights)):
        rows = None if values is None else int(np.shape(values)[0]) if np.ndim(values) else 0
        if rows is not None and rows != images:
            raise ValueError(f"evaluate got {images} images but {rows} {what}: pass one per image.")


class ZooModel(keras.Model):
    """Base of the zoo's model families (multi-exit nets, DMNN).

    Args:
        input_shape: `(H, W, C)` of the images the model takes.
        num_classes: number of logits, a positive integer.
        **kwargs: `keras.Model` arguments (`name`, ...). A `dtype` other
            than the global policy is refused: set
            `keras.mixed_precision.set_global_policy` before building.

    Example:
    ```python
    model = adaptive_zoo.MSDNetCIFARAnytime(num_classes=10)
    model.input_shape  # (None, 32, 32, 3), as on keras.applications models
    ```
    """

    def __init__(self, input_shape, num_classes, **kwargs):
        if kwargs.get("dtype") is not None:
            policy = keras.dtype_policies.get(kwargs["dtype"]).name
            if policy != keras.config.dtype_policy().name:
                # A model's own dtype does not reach the layers it builds.
                raise ValueError(
                    f"dtype={policy!r} would set the model's policy but not its layers'. Set it for "
                    "the whole model before building it: "
                    f"keras.mixed_precision.set_global_policy({policy!r})."
                )
        super().__init__(**kwargs)
        try:
            self.image_shape = tuple(int(d) for d in input_shape)
        except (TypeError, ValueError):
            self.image_shape = ()
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"input_shape must be (H, W, C) of positive integers, got {input_shape!r}.")
        self.num_classes = positive_integer(num_classes, "num_classes")
        self._compiled_fns = {}

    def compile(self, optimizer="rmsprop", loss="auto", **kwargs):
        """Keras' `compile`, with a loss by default.

        Args:
            optimizer: as in Keras (default `"rmsprop"`, Keras' own).
            loss: `"auto"` (the default): sparse categorical cross-entropy
                on the logits (integer labels; per pixel for CNMM's
                segmentation), on every exit of a multi-exit model and
                under DMNN's resource and category terms. Or any Keras
                loss, e.g. `CategoricalCrossentropy(from_logits=True)` for
                one-hot labels. The models always need one to train.
            **kwargs: Keras' other `compile` arguments (`metrics`, ...).

        Example:
        ```python
        model = adaptive_zoo.MSDNetTiny(num_classes=10)
        model.compile(optimizer="adam", metrics=["accuracy"])
        model.fit(images, labels, epochs=10)
        ```
        """
        if isinstance(loss, str) and loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def compile_from_config(self, config):
        # Keras' own skips a model whose `compile` is overridden (`load_model`
        # would then leave it uncompiled); this one takes Keras' arguments.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)  # its variables, for the saved state

    def _build_optimizer_before_tracing(self):
        """Build the optimizer's variables (Adam's moments, ...) before the
        first training step is traced, as Keras does on JAX and PyTorch.

        Keras' TensorFlow trainer (3.15), without a distribution strategy,
        builds them inside the first trace of its training step, and a
        `tf.function` whose first trace creates variables is traced again:
        the first `fit` of a small MSDNet took about 20 s on TensorFlow, 10
        of them the second trace. Only where every layer is built (the
        zoo's models build at construction); otherwise Keras builds as
        usual."""
        if (keras.backend.backend() != "tensorflow" or self.optimizer is None or self.optimizer.built
                or not all(layer.built for layer in self._flatten_layers())):
            return
        with self.distribute_strategy.scope():
            self.optimizer.build(self.trainable_variables)

    # Keras' loops trace `call`, and TensorFlow, when it traces again for a
    # new shape, relaxes the shape to (batch, H, W, None): `call` then cannot
    # see a wrong number of channels, and TensorFlow's convolution takes 2
    # channels for a 1-channel kernel as a grouped convolution: wrong logits,
    # no error. Hence `_check_data` before Keras' loop starts.
    #
    # Keras' JAX trainer (3.15) takes every variable's value out of the model
    # when it hands the state to the first step of `fit`, `evaluate` or
    # `predict`, and puts the new values back only once a step has run: an
    # error in that first step (images of the wrong shape, labels the loss
    # refuses, no loss) left every variable empty, and each later call
    # failed with "'NoneType' object is not callable". The values handed out
    # are kept until the call ends, and put back where it raised. (They cost
    # no memory once a step has run: the step takes their buffers over.)
    @functools.wraps(keras.Model.fit)
    def _fit(self, *args, **kwargs):
        self._build_optimizer_before_tracing()
        return keras.Model.fit(self, *args, **kwargs)

    fit = _keras_loop(_fit, labeled=True, name="fit")
    _keras_evaluate = _keras_loop(keras.Model.evaluate, labeled=True)
    predict = _keras_loop(keras.Model.predict)
    _handed_out = ()

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 steps=None, callbacks=None, return_dict=False, budget=None, **kwargs):
        """Keras' `evaluate`, plus a budget: the loss and metrics at a cost.

        With `budget=None` this is `keras.Model.evaluate` (the full model).
        With a budget, the compiled loss and metrics are those of what
        `predict(x, budget=budget)` returns (each image computes only what
        the budget leaves it), and `"flops"` is the mean FLOPs per image
        actually spent.

        Args:
            x, y, batch_size, sample_weight, steps, verbose, return_dict:
                as in Keras (`y` and `sample_weight` with arrays only; a
                dataset yields `(images, labels)` or `(images, labels,
                sample_weight)`).
            callbacks: Keras callbacks, without a budget only (the budget's
                loop calls none).
            budget: `None` or a number in (0, 1].
            **kwargs: with a budget, the family's `predict` arguments
                (`mode`); without, Keras' other `evaluate` arguments.

        Returns:
            As Keras: the loss, or the list `[loss, *metrics]` in
            `metrics_names` order, or a dict with `return_dict`; with a
            budget `"flops"` comes last (`[loss, *metrics, flops]`).

        Example:
        ```python
        model.compile(metrics=["accuracy"])
        loss, accuracy, flops = model.evaluate(x_test, y_test, budget=0.5)
        ```
        """
        if budget is None:
            return self._keras_evaluate(
                x, y, batch_size=batch_size, verbose=verbose, sample_weight=sample_weight,
                steps=steps, callbacks=callbacks, return_dict=return_dict, **kwargs)
        if callbacks:
            raise ValueError("evaluate with a budget runs the model's own batch loop, which calls no "
                             "callbacks: leave callbacks out.")
        if not self.compiled:
            raise ValueError("evaluate needs a compiled model (its loss and metrics): call "
                             "model.compile() first.")
        logs = self._evaluate_at_budget(x, y, sample_weight, batch_size, steps, verbose,
                                        dict(kwargs, budget=budget, return_cost=True))
        return logs if return_dict else self._flatten_metrics_in_order(logs)

    def _budget_logs(self, x, y, sample_weight, batch_size, steps, verbose, predict_kwargs):
        """`evaluate`'s logs for a budget: `{"loss", *metrics, "flops"}`."""
        batch_size = 32 if batch_size is None else positive_integer(batch_size, "batch_size")
        if hasattr(x, "shape"):
            if y is None:
                raise ValueError("evaluate with a budget needs labels: pass x and y.")
            _check_counts(len(x), y, sample_weight)  # before any image runs
            # One `predict` over the arrays: the multi-exit models pool the
            # survivors of consecutive batches.
            outputs = self.predict(x, batch_size=batch_size, verbose=verbose, steps=steps,
                                   **predict_kwargs)
            n = len(outputs[0])
            labels = np.asarray(keras.ops.convert_to_numpy(y))[:n]
            weights = None if sample_weight is None else np.asarray(
                keras.ops.convert_to_numpy(sample_weight))[:n]
            parts = [(labels[i:i + batch_size], outputs[0][i:i + batch_size],
                      outputs[1][i:i + batch_size], None if weights is None else weights[i:i + batch_size])
                     for i in range(0, n, batch_size)]
        else:
            if y is not None or sample_weight is not None:
                raise ValueError("With a dataset, its batches carry the labels (and sample weights): "
                                 "leave y and sample_weight out.")
            parts = self._budget_batches(x, steps, verbose, predict_kwargs)
        loss, metrics = self._compile_loss, self._compile_metrics
        if metrics is not None:
            metrics.reset_state()
        total_loss = total_flops = count = 0.0
        for labels, logits, cost, weights in parts:
            if loss is not None:
                value = loss(labels, logits, weights)
                total_loss += float(keras.ops.convert_to_numpy(value)) * len(logits)
            if metrics is not None:
                metrics.update_state(labels, logits, weights)
            total_flops += float(np.sum(cost))
            count += len(logits)
        if not count:
            raise ValueError("evaluate got no images.")
        logs = {} if loss is None else {"loss": total_loss / count}
        if metrics is not None:
            logs.update({k: float(keras.ops.convert_to_numpy(v)) for k, v in metrics.result().items()})
        logs["flops"] = total_flops / count
        return logs

    def _budget_batches(self, data, steps, verbose, predict_kwargs):
        """`_budget_logs`' parts for a dataset: each batch's
        `(labels, logits, cost, weights)`, its counts checked before it runs."""
        for images, labels, weights in labeled_batches(data, steps, verbose):
            _check_counts(len(images), labels, weights)
            yield (labels, *self.predict(images, batch_size=len(images), verbose=0, **predict_kwargs),
                   weights)

    # Checked as Keras' `evaluate` is: the images, the labels, their errors.
    _evaluate_at_budget = _keras_loop(_budget_logs, labeled=True, name="evaluate")

    def _check_data(self, x, caller="fit"):
        """`_check_inputs` of the images in `x` (`fit`/`evaluate`/`predict`
        data, `caller` the method's name) where their shape shows without
        reading them: an array or tensor, a `tf.data.Dataset`'s element
        spec. An array or tensor of no images is a `ValueError` (Keras'
        loop fails on it with an `UnboundLocalError`)."""
        spec = getattr(x, "element_spec", None)
        if spec is not None:  # tf.data: images, or (images, labels)
            x = spec[0] if isinstance(spec, tuple) else spec
        try:
            tuple(x.shape)
        except (AttributeError, TypeError, ValueError):  # no shape, or its rank unknown
            return
        self._check_inputs(x)
        if spec is None and x.shape[0] == 0:
            raise ValueError(f"{caller} got no images.")

    def _with_labels_checked(self, args, kwargs):
        """`fit`/`evaluate`'s arguments, with their labels checked where the
        loss is sparse cross-entropy (`compile`'s `"auto"`, or given by name;
        `_class_id_loss`): one class id in
        `[0, num_classes)` per image (`_label_shape`). Labels given as
        arrays or tensors are checked now (`check_class_labels`), before any
        weight moves; a `tf.data.Dataset`'s labels have their shape checked
        now and their values per batch, as Keras' loop reads them
        (`checked_label_batches`), as are those of a Python generator, a
        `keras.utils.PyDataset` or a PyTorch `DataLoader`
        (`checked_python_batches`). `validation_data` alike."""
        takes_class_ids, ignore_class = _class_id_loss(getattr(self, "loss", None))
        if not takes_class_ids:
            return args, kwargs

        def checked(x, y):
            if y is not None and hasattr(y, "shape"):
                check_class_labels(self.name, self.num_classes, y, ignore_class, self._label_shape())
                return x
            spec = getattr(x, "element_spec", None)
            if y is None and isinstance(spec, tuple) and len(spec) > 1 and hasattr(spec[1], "shape"):
                labels = spec[1]
                shape = None if labels.shape.rank is None else labels.shape
                check_label_spec(self.name, self.num_classes, shape, labels.dtype.as_numpy_dtype,
                                 self._label_shape(), dtype_name=labels.dtype.name)
                return checked_label_batches(x, self.name, self.num_classes, ignore_class)
            if y is None:  # a generator, a PyDataset, a DataLoader; other data as it is
                return checked_python_batches(x, self.name, self.num_classes, ignore_class,
                                              self._label_shape())
            return x

        args, kwargs = list(args), dict(kwargs)
        if args:
            args[0] = checked(args[0], args[1] if len(args) > 1 else kwargs.get("y"))
        elif "x" in kwargs:
            kwargs["x"] = checked(kwargs["x"], kwargs.get("y"))
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) > 1:
            self._check_data(validation[0], "validation_data")
            checked(validation[0], validation[1])
        elif validation is not None:
            kwargs["validation_data"] = checked(validation, None)
        return tuple(args), kwargs

    def _label_shape(self):
        """The shape of one image's label: `()`, one class id per image."""
        return ()

    def _check_labels(self, labels):
        """`calibrate`'s check of held-out labels: one class id in
        `[0, num_classes)` per image (`check_class_labels`). Calibration
        scores the exits' argmax against them, so labels past the last
        class, or one-hot ones, would give a curve of wrong accuracies
        without an error."""
        check_class_labels(self.name, self.num_classes, labels, label_shape=self._label_shape(),
                           loss_hints=False)

    def _get_jax_state(self, *args, **kwargs):
        if kwargs.get("purge_model_variables"):
            optimizer = getattr(self, "optimizer", None)
            groups = (self.trainable_variables, self.non_trainable_variables,
                      self.metrics_variables, optimizer.variables if optimizer else [])
            self._keep_handed_out(tuple((v, v.value) for group in groups for v in group))
        return super()._get_jax_state(*args, **kwargs)

    def _keep_handed_out(self, pairs):
        # Past Keras' attribute tracking: these variables are the model's own.
        object.__setattr__(self, "_handed_out", pairs)

    def _put_back_handed_out_values(self):
        """After Keras' JAX `fit`/`evaluate`/`predict` raised: the values of
        the last step that ran (Keras' own state, where one did), else the
        values handed out to the first, in the variables left empty."""
        if getattr(self, "_jax_state", None) is not None:
            self.jax_state_sync()
            self._jax_state = None
        for variable, value in self._handed_out:
            if variable._value is None and not value.is_deleted():
                variable.assign(value)

    @property
    def input_shape(self):
        """`(None, H, W, C)`: the batches the model takes."""
        return (None,) + self.image_shape

    def _check_inputs(self, inputs):
        check_image_batch(self.name, self.image_shape, inputs)

    def _own_loop_steps(self, kwargs):
        """The `steps` among Keras' `predict` arguments `kwargs`, where the
        family runs its own batch loop (a budget, the cost, DMNN's gates):
        `None` or a positive integer. `callbacks` are refused (that loop
        calls none); another name is a `TypeError`, as in Keras."""
        kwargs = dict(kwargs)
        steps, callbacks = kwargs.pop("steps", None), kwargs.pop("callbacks", None)
        if kwargs:
            raise TypeError(f"predict() got an unexpected keyword argument {next(iter(kwargs))!r}.")
        if callbacks:
            raise ValueError(
                "predict runs the model's own batch loop here (for a budget, the cost or the "
                "gates), which calls no callbacks: leave callbacks out.")
        return None if steps is None else positive_integer(steps, "steps")

    def _checked_images(self, inputs):
        """`inputs` checked (`_check_inputs`) and, where they are integer
        pixels (uint8), cast to `keras.config.floatx()` as a functional
        Keras model casts them; the first step of every family's `call`."""
        self._check_inputs(inputs)
        return as_float_images(inputs)

    def _family_config(self):
        """The constructor arguments of the subclass's architecture."""
        raise NotImplementedError

    def classifier_layers(self):
        """The layers whose weights depend on `num_classes`: every exit's
        classifier (and DMNN's category heads, which depend on the classes'
        categories).

        Loading a checkpoint trained for another number of classes
        (`weights=` with a different `num_classes`) loads every other
        weight and leaves these at their fresh initialization, with a
        warning, to be fine-tuned.

        Returns:
            A list of Keras layers.

        Example:
        ```python
        # The authors' ImageNet MSDNet, fine-tuned on 10 classes: a warning
        # says that these layers start fresh.
        model = adaptive_zoo.MSDNetImageNet(num_classes=10, weights="msdnet.pth.tar")
        [layer.path for layer in model.classifier_layers()]  # each exit's dense
        ```
        """
        raise NotImplementedError

    def freeze_backbone(self, frozen=True):
        """Freeze every weight but the classifiers' (`classifier_layers()`),
        to train new classifiers first, as `backbone.trainable = False` does
        in Keras' transfer-learning recipe.

        The frozen layers' BatchNorm runs in inference mode in `fit` (Keras'
        rule for a non-trainable BatchNorm). Setting `model.trainable =
        False` instead would leave nothing to train: a frozen model reports
        no trainable weights, whatever its layers say.

        Args:
            frozen: `False` makes every weight trainable again.

        Example:
        ```python
        model = adaptive_zoo.MSDNetImageNet(num_classes=10, weights="msdnet.pth.tar")
        model.freeze_backbone()      # train the new classifiers...
        model.compile(...); model.fit(train_ds, epochs=5)
        model.freeze_backbone(False)  # ...then everything, at a lower rate
        model.compile(...); model.fit(train_ds, epochs=20)
        ```
        """
        self.trainable = True  # Keras sets every sublayer
        for layer in self._flatten_layers(include_self=True):
            for variable in layer._trainable_variables:
                variable.trainable = True
        if not frozen:
            return
        heads = {id(layer) for layer in self.classifier_layers()}

        def freeze(layer):
            if id(layer) in heads:
                return
            if not any(id(inner) in heads for inner in layer._flatten_layers(include_self=False)):
                layer.trainable = False
                return
            # An ancestor of a classifier: its own weights, then its layers.
            for variable in layer._trainable_variables:
                variable.trainable = False
            for child in layer._flatten_layers(include_self=False, recursive=False):
                freeze(child)

        freeze(self)

    # ------------------------------------------------------------------ #
    # Saving and export.
    # ------------------------------------------------------------------ #
    def save(self, filepath, *args, **kwargs):
        """Keras' `save`, refusing Keras' legacy HDF5 format (`.h5`, `.hdf5`)
        before anything is written: its loader looks classes up by their bare
        name, and the zoo registers its own under `adaptive_zoo>...`, so
        `keras.saving.load_model` could not read the file back ("Unknown
        layer: 'MSDNet'"). Save as `.keras`, or the weights alone with
        `save_weights("name.weights.h5")`."""
        if isinstance(filepath, (str, os.PathLike)) and str(os.fspath(filepath)).lower().endswith(
                (".h5", ".hdf5")):
            raise ValueError(
                f"{self.name} cannot be saved in Keras' legacy HDF5 format ({filepath!r}): "
                "keras.saving.load_model could not read it back. Save it as a .keras file "
                "(model.save('model.keras')), or its weights with "
                "model.save_weights('model.weights.h5')."
            )
        return super().save(filepath, *args, **kwargs)

    # Whether Keras' own export (the model's traced call) runs what the model
    # promises; DMNN's traced call is its masked reference path.
    _exports_by_call = True

    def _serving_fn(self, budget, mode):
        """A function of an image batch that runs only what `budget` keeps,
        or a clear `ValueError` where a fixed graph cannot."""
        raise NotImplementedError

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
               budget=None, mode="auto", **kwargs):
        """Export the model for serving, optionally pruned to a budget.

        Keras' `export`, with the input signature the model takes
        (`(None, H, W, C)` float32) filled in. With `format="tf_saved_model"`
        the artifact's `serve(images)` returns logits and runs only what the
        budget keeps, so that the artifact is smaller in compute as well:

        - MSDNet, RANet, uncalibrated (or `mode="anytime"`): `budget=None`
          the last exit; a budget the anytime exit for it (stages past it
          are not in the graph).
        - CNMM: the graph pruned for the budget (pruned edges are not in the
          graph).
        - DMNN: the skipping path (each sub-block gathers the images for
          which it is on), with the gates as trained or the budget's rule. It
          needs data-dependent shapes in the graph, so it exports under
          `KERAS_BACKEND=tensorflow` only (weights load on any backend).
        - A calibrated MSDNet or RANet (budgeted batch classification): each
          stage runs on the samples still running, a stage that none reaches
          not at all; TensorFlow only, for the same reason. `mode="anytime"`
          exports the anytime exit on either backend.

        The SavedModel export works with the TensorFlow and JAX backends.
        Other formats (`"onnx"`, ...) export the plain model, without a
        budget, as Keras does.

        Args:
            filepath: where to write the artifact.
            format: Keras' export format.
            verbose: print a message when done.
            input_signature: default `[keras.InputSpec((None, H, W, C))]`.
            budget: `None` or a number in (0, 1], as in `call`.
            mode: as in `call`, for the families that take it.
            **kwargs: passed to Keras' exporter (e.g. `jax2tf_kwargs`).

        Example:
        ```python
        model.export("cnmm_half", budget=0.5)
        reloaded = tf.saved_model.load("cnmm_half")
        logits = reloaded.serve(images)
        ```
        """
        if input_signature is None:
            input_signature = [keras.InputSpec(shape=self.input_shape, dtype="float32")]
        if format != "tf_saved_model":
            if budget is not None or not self._exports_by_call:
                raise ValueError(
                    f"format={format!r} exports {self.name}'s plain traced call; "
                    + ("a budget " if budget is not None else "its skipping path ")
                    + 'exports with format="tf_saved_model".')
            return super().export(filepath, format=format, verbose=verbose,
                                  input_signature=input_signature, **kwargs)
        fn = self._serving_fn(budget, mode)  # checks the budget first
        if keras.backend.backend() not in ("tensorflow", "jax"):
            raise ValueError(
                "A SavedModel exports with KERAS_BACKEND=tensorflow or jax (Keras' PyTorch export "
                f"does not take a dynamic batch size); got {keras.backend.backend()!r}. The "
                "weights load on any backend: model.save_weights(...) here, load_weights there.")
        archive = keras.export.ExportArchive()
        archive.track(self)
        archive.add_endpoint("serve", fn, input_signature, **kwargs)
        archive.write_out(filepath, verbose=True if verbose is None else verbose)

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "input_shape": list(self.image_shape),
            "num_classes": self.num_classes,
        }
        config.update(self._family_config())
        return config
