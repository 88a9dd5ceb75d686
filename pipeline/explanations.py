"""One-line explanations of each figure for the operators who read them (not ML people).

Shown beside the figure in the Dagster UI, so nobody has to know what "recall at IoU 0.5" means to
decide whether a model is good enough for the line.
"""

EXPLAIN = {
    "confidence_histogram": "How sure the detector is about the best person box on each frame that has a "
                            "person: bars piled near 1 mean confident detections; many bars below the red median "
                            "line mean it often hesitates and a threshold may drop real operators.",
    "recall_by_operation": "Share of labelled people the detector finds (box overlapping the label by at least "
                           "half, IoU 0.5) per sewing operation; a short bar is an operation where operators at "
                           "the machine go unseen. Error bars: 95% range, resampling whole videos.",
    "worst_frames": "The frames the detector handled worst: green is a labelled person, red a detection. "
                    "Look for what they share (occlusion by the machine, dark corner, odd angle).",
    "paired_plot": "Per operation, how much the fine-tuned model finds more (green) or fewer (red) people than "
                   "the off-the-shelf one on the same frames; a bar whose error bar crosses 0 is no proven change.",
    "confusion_matrix": "Rows: what is really there; columns: what the model said. person/person = people "
                        "found; person/background = people missed (an operator not counted at the machine); "
                        "background/person = false alarms (a box on an empty seat or a coat, counted as "
                        "someone working).",
    "pr_f1_curves": "Left: precision (how many boxes are real people) against recall (how many people get a "
                    "box); more area is better. Right: the balance (F1) at each confidence threshold; the dot and "
                    "dashed line mark the threshold the line would run at.",
    "conf_sweep": "Raising the confidence threshold removes false alarms (precision up) but also misses more "
                  "operators (recall down); the dashed line is the chosen threshold (best F1).",
    "training_curves": "Losses should fall and precision, recall and mAP rise then flatten; a validation loss "
                       "that climbs while training loss falls means the model is memorising the training videos.",
    "domain_shift": "The same model on the test split vs on recordings made after the cameras were installed: "
                    "a negative gap means it does worse on the line's real footage than the numbers above "
                    "suggest. The range is 95%, resampling whole videos.",
    "comparison": "Candidate vs production on the same frames: Δ recall is how many more (or fewer) people the "
                  "candidate finds; a CI entirely below 0 means it misses people production finds.",
    "shadow": "Both models on the same live frames: agreement is how often they put boxes on the same people; "
              "a lower detection rate or confidence means the candidate would count fewer operators.",
    "preview": "The model run over a stretch of real video: each box is a detection with its confidence; "
               "watch for flicker (a person lost for a few frames) and boxes on empty machines.",
    "speed": "Milliseconds per image spent preparing it, running the network and cleaning up boxes; the sum "
             "bounds how many frames per second one camera can get.",
}


def explain(name: str) -> str:
    return EXPLAIN[name]
