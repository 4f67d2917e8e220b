"""GumbelGate: the per-block controller of DMNN (Su et al., 2019).

The controller of one block looks at the block's input and at the previous
block's controller state, and decides per image which of the block's `N`
sub-blocks run:

    state = relu(W_x . gap(x) + b_x) + relu(W_s . previous_state + b_s)
    logits = W_g . state + b_g          # (batch, N, 2): (off, on) per sub-block

Training draws hard straight-through Gumbel-softmax samples (temperature 1 by
default); inference is deterministic: a sub-block is on where its softmax
probability of "on" reaches a threshold (0.5 as trained; the budget moves it).
"""

import math

import keras
from keras import ops

from adaptive_zoo import cost, fast_path
from adaptive_zoo.checks import positive_integer

__all__ = ["GumbelGate"]


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class GumbelGate(keras.layers.Layer):
    """Controller of one DMNN block: on/off decisions for `N` sub-blocks.

    Args:
        num_sub_blocks: `N`, the number of sub-blocks it decides for.
        units: width of the controller state (32 in the paper).
        use_previous_state: whether the controller adds an FC + ReLU of the
            previous block's controller state (False for the first gated
            block of a network).
        temperature: Gumbel-softmax temperature in training.
        on_bias: initial bias of the "on" logit minus nothing: the gate's
            logits start at `(0.1, on_bias)` per sub-block (ConvNet-AIG's
            initialization: sub-blocks start on about 87% of the time).
        seed: seed of the layer's `keras.random.SeedGenerator`.
        **kwargs: base layer arguments (`name`, ...).

    Call arguments:
        inputs: the block input `(batch, H, W, C)`.
        previous_state: `(batch, units)` state of the previous controller, or
            `None` (required iff `use_previous_state`).
        training: training mode: hard straight-through Gumbel samples, fresh
            noise on every call (also under `jax.jit`, through the seed state).
        threshold: inference threshold on the "on" probability.

    Returns:
        `(gates, state)`: `gates` `(batch, N)` float in {0, 1} (straight-through
        gradients in training) and the controller `state` `(batch, units)`,
        for the next controller and the category head.

    Example:
    ```python
    gate = GumbelGate(num_sub_blocks=2, use_previous_state=False)
    gates, state = gate(keras.ops.ones((4, 8, 8, 16)))  # (4, 2), (4, 32)
    ```
    """

    def __init__(
        self,
        num_sub_blocks,
        units=32,
        use_previous_state=True,
        temperature=1.0,
        on_bias=2.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_sub_blocks = positive_integer(num_sub_blocks, "num_sub_blocks")
        self.units = positive_integer(units, "units")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if not math.isfinite(float(on_bias)):
            raise ValueError(f"on_bias must be a finite number, got {on_bias!r}.")
        self.use_previous_state = bool(use_previous_state)
        self.temperature = float(temperature)
        self.on_bias = float(on_bias)
        self.seed = seed
        self.input_fc = keras.layers.Dense(self.units, name="input_fc")
        self.state_fc = (
            keras.layers.Dense(self.units, name="state_fc") if self.use_previous_state else None
        )
        bias = [0.1, self.on_bias] * self.num_sub_blocks
        self.logits_fc = keras.layers.Dense(
            2 * self.num_sub_blocks,
            bias_initializer=keras.initializers.Constant(bias),
            name="logits_fc",
        )
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")
        self.input_spec = keras.InputSpec(ndim=4)  # the block input (batch, H, W, C)

    def build(self, inputs_shape, previous_state_shape=None):
        if self.use_previous_state and previous_state_shape is not None and (
                len(previous_state_shape) != 2 or previous_state_shape[-1] not in (None, self.units)):
            # Keras' Dense named its own sublayer ("state_fc") instead.
            raise ValueError(
                f"{self.name} takes previous_state of shape (batch, {self.units}), the previous "
                f"controller's state; got shape {tuple(previous_state_shape)}."
            )
        channels = inputs_shape[-1]
        self.input_fc.build((None, channels))
        if self.state_fc is not None:
            self.state_fc.build((None, self.units))
        self.logits_fc.build((None, self.units))

    def controller(self, inputs, previous_state=None, training=None):
        """The deterministic part: `(logits (batch, N, 2), state (batch, units))`.

        `training=False` lets PyTorch inference call the dense layers directly
        (`fast_path.call_layer`); the result is the same."""
        pooled = ops.mean(inputs, axis=(1, 2))
        state = ops.relu(fast_path.call_layer(self.input_fc, pooled, training=training))
        if self.use_previous_state:
            if previous_state is None:
                raise ValueError(
                    f"{self.name} adds the previous controller's state; pass previous_state."
                )
            state = state + ops.relu(fast_path.call_layer(self.state_fc, previous_state, training=training))
        logits = fast_path.call_layer(self.logits_fc, state, training=training)
        return ops.reshape(logits, (-1, self.num_sub_blocks, 2)), state

    @staticmethod
    def on_probability(logits):
        """Probability of "on" of each sub-block, `(batch, N)`."""
        return ops.softmax(logits, axis=-1)[..., 1]

    def sample(self, logits):
        """Hard straight-through Gumbel-softmax sample of "on", `(batch, N)`."""
        uniform = keras.random.uniform(
            ops.shape(logits), minval=1e-6, maxval=1.0 - 1e-6, seed=self.seed_generator
        )
        gumbel = -ops.log(-ops.log(uniform))
        soft = ops.softmax((logits + ops.cast(gumbel, logits.dtype)) / self.temperature, axis=-1)
        hard = ops.one_hot(ops.argmax(soft, axis=-1), 2, dtype=soft.dtype)
        straight = hard - ops.stop_gradient(soft) + soft
        return straight[..., 1]

    def call(self, inputs, previous_state=None, training=None, threshold=0.5):
        logits, state = self.controller(inputs, previous_state, training=training)
        if training:
            gates = self.sample(logits)
        else:
            gates = ops.cast(self.on_probability(logits) >= threshold, logits.dtype)
        return gates, state

    def compute_output_shape(self, inputs_shape, previous_state_shape=None):
        return (inputs_shape[0], self.num_sub_blocks), (inputs_shape[0], self.units)

    def flops(self, input_shape):
        """Multiply-adds of the controller for one image of shape `(H, W, C)`."""
        h, w, c = input_shape
        total = h * w * c  # global average pooling: one add per element
        total += cost.dense_flops(c, self.units) + self.units  # FC + ReLU
        if self.use_previous_state:
            total += cost.dense_flops(self.units, self.units) + 2 * self.units  # FC, ReLU, add
        total += cost.dense_flops(self.units, 2 * self.num_sub_blocks)
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            num_sub_blocks=self.num_sub_blocks,
            units=self.units,
            use_previous_state=self.use_previous_state,
            temperature=self.temperature,
            on_bias=self.on_bias,
            seed=self.seed,
        )
        return config
