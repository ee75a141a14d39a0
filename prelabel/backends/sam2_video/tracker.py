"""A streaming SAM 2 video tracker whose memory does not grow with the number of frames.

Why written here: transformers' ``Sam2VideoModel`` streams (a session without a pre-loaded
video, ``model(inference_session=..., frame=..., frame_idx=...)``), but its session keeps every
frame's pixels and, per object and frame, every output including a full-resolution float mask,
with no cap (shared/model-stack.md section 8). :class:`Sam2Tracker` implements the
:class:`~prelabel.pipeline.tracks.Tracker` protocol over that session and, after each call,
prunes what the model never reads again:

- pixels of frames before the current one (the current frame's vision features are cached);
- ``high_res_masks`` of every stored output (only used to encode memory within the call);
- ``pred_masks`` of outputs before the current frame (only read back for the current frame);
- non-prompted ("non-conditioning") outputs older than the look-back window, the larger of
  ``num_maskmem - 1`` memory frames and ``max_object_pointers_in_encoder - 1`` object pointers
  (15 frames for the released checkpoints); prompted outputs stay, one per object;
- consumed mask prompts and per-frame tracking flags of past frames.

Masks come out bit-identical to an unpruned session (tests/test_sam2_tracker.py). ``frame_idx``
is always passed: transformers' default is the number of stored frames, wrong once pruned.

Behaviour of the session worth knowing: a mask prompt is taken as the object's mask on its
frame (no decoder pass); adding objects re-runs the model on the current frame for every
object (the others get the same result again: their memory is of earlier frames only); and
without ``frame`` the model is not in streaming mode and sizes its object-pointer window by
the number of stored frames, so :meth:`Sam2Tracker.add_objects` passes the frame again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from transformers import Sam2VideoInferenceSession, Sam2VideoModel

from prelabel.backends.sam2_video.frames import frame_pixel_values, prompt_mask, upscale_masks
from prelabel.pipeline.tracks import TrackedObject

__all__ = ["Sam2Tracker", "look_back"]

_PER_OBJECT = (
    "point_inputs_per_obj",
    "mask_inputs_per_obj",
    "output_dict_per_obj",
    "frames_tracked_per_obj",
)


def look_back(model: Sam2VideoModel) -> int:
    """How many past frames the model reads non-prompted outputs of."""
    config = model.config
    return max(int(config.num_maskmem) - 1, int(config.max_object_pointers_in_encoder) - 1, 1)


class Sam2Tracker:
    """Tracks objects through frames given one at a time; see the module docstring.

    ``prune=False`` keeps transformers' full session (for the test that pruning changes
    nothing). One tracker follows one sequence: make a new one for the next.
    """

    def __init__(self, model: Sam2VideoModel, *, prune: bool = True) -> None:
        self.model = model
        self.prune = prune
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.image_size = int(model.config.image_size)
        self.session = Sam2VideoInferenceSession(
            inference_device=self.device,
            inference_state_device=self.device,
            video_storage_device=self.device,
            dtype=self.dtype,
        )
        self.frame_idx = -1
        self._size: tuple[int, int] = (0, 0)
        self._pixels = torch.empty(0)

    @torch.inference_mode()
    def advance(self, image: Image.Image) -> dict[int, TrackedObject]:
        self.frame_idx += 1
        self._size = (image.height, image.width)
        pixels = frame_pixel_values(image, self.image_size).to(self.device, self.dtype)
        self._pixels = pixels
        if self.session.get_obj_num() == 0:
            # Nothing to propagate (the model refuses to run without objects); keep the frame
            # for objects added on it.
            self.session.add_new_frame(pixels, frame_idx=self.frame_idx)
            self._prune()
            return {}
        output = self.model(inference_session=self.session, frame=pixels, frame_idx=self.frame_idx)
        self._prune()
        return self._objects(output)

    @torch.inference_mode()
    def add_objects(self, masks: dict[int, npt.NDArray[np.bool_]]) -> dict[int, TrackedObject]:
        if self.frame_idx < 0:
            raise RuntimeError("add_objects before the first advance: no current frame")
        if not masks:
            return {}
        session = self.session
        for obj_id, mask in masks.items():
            if obj_id in session.obj_ids:
                raise ValueError(f"object {obj_id} is already tracked")
            if mask.shape != self._size:
                raise ValueError(f"mask of shape {mask.shape} on a frame of size {self._size}")
            obj_idx = session.obj_id_to_idx(obj_id)
            session.add_mask_inputs(obj_idx, self.frame_idx, prompt_mask(mask, self.image_size))
        session.obj_with_new_inputs = list(masks)
        # The frame goes in again (same index) so the model runs in streaming mode: without a
        # frame it sizes the object-pointer window by the frames stored, which pruning cuts
        # to one, and divides by zero.
        output = self.model(inference_session=session, frame=self._pixels, frame_idx=self.frame_idx)
        for obj_id in masks:
            session.mask_inputs_per_obj[session.obj_id_to_idx(obj_id)].clear()
        self._prune()
        objects = self._objects(output)
        return {obj_id: objects[obj_id] for obj_id in masks}

    def remove_objects(self, ids: Iterable[int]) -> None:
        drop = set(ids)
        session = self.session
        keep = [obj_id for obj_id in session.obj_ids if obj_id not in drop]
        if len(keep) == len(session.obj_ids):
            return
        # The session has no removal: rebuild its per-object tables with compact indices.
        old = [session.obj_id_to_idx(obj_id) for obj_id in keep]
        state: Any = session
        state._obj_id_to_idx = OrderedDict((obj_id, n) for n, obj_id in enumerate(keep))
        state._obj_idx_to_id = OrderedDict(enumerate(keep))
        state.obj_ids = list(keep)
        for name in _PER_OBJECT:
            table = getattr(session, name)
            setattr(session, name, {n: table[o] for n, o in enumerate(old)})
        session.obj_with_new_inputs = [i for i in session.obj_with_new_inputs if i not in drop]

    def stored_frames(self) -> int:
        """Frames the session holds anything of (pixels or outputs): bounded when pruning."""
        frames = set(self.session.processed_frames or {})
        for outputs in self.session.output_dict_per_obj.values():
            frames.update(outputs["non_cond_frame_outputs"])
        return len(frames)

    def _objects(self, output: Any) -> dict[int, TrackedObject]:
        masks = upscale_masks(output.pred_masks, self._size)
        logits = output.object_score_logits.float().reshape(-1).cpu()
        return {
            int(obj_id): TrackedObject(
                mask=masks[n], present=bool(logits[n] > 0), score=float(logits[n].sigmoid())
            )
            for n, obj_id in enumerate(output.object_ids)
        }

    def _prune(self) -> None:
        if not self.prune:
            return
        current, session = self.frame_idx, self.session
        oldest = current + 1 - look_back(self.model)
        frames = session.processed_frames or {}
        for frame in [f for f in frames if f < current]:
            del frames[frame]
        for obj_idx, outputs in session.output_dict_per_obj.items():
            non_cond = outputs["non_cond_frame_outputs"]
            for frame in [f for f in non_cond if f < oldest]:
                del non_cond[frame]
            for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
                for frame, out in outputs[kind].items():
                    out.pop("high_res_masks", None)
                    if frame < current:
                        out.pop("pred_masks", None)
            tracked = session.frames_tracked_per_obj[obj_idx]
            for frame in [f for f in tracked if f < current]:
                del tracked[frame]
            for inputs in (session.mask_inputs_per_obj, session.point_inputs_per_obj):
                for frame in [f for f in inputs[obj_idx] if f < current]:
                    del inputs[obj_idx][frame]
