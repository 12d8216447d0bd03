"""Publishing the built boxes: dist/ checks, a box catalog folder, HCP Vagrant (Vagrant Cloud).

Each module is one concern; `flow` strings them together for the publish task:

    errors       PublishError: what every module here raises (the task makes it an exit)
    dist         dist/ matches build.json (sizes, sha256)
    published    a published provider entry: checksum comparison, refusal to overwrite
    catalog      plan and apply a catalog folder (pure plan, atomic apply)
    lock         one publish at a time per catalog folder
    changelog    a version's description from CHANGELOG.md
    cloud_plan   the Vagrant Cloud API steps a publish needs (pure)
    cloud_client the Vagrant Cloud API with retries and token hygiene
    flow         read, plan, print, act: what `invoke publish` runs
"""
