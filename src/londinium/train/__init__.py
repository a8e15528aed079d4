"""Training: `train()` runs the loop; checkpoints, schedule, devices and monitoring live beside it.

    from londinium.train.trainer import train                 # the stage (`londinium train`)
    from londinium.model.load import load_run                 # a trained GPT for eval/generate/export/serve
"""
