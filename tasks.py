"""docker-registry-cache tasks: `invoke --list` is the menu; each module below is one concern."""

from invoke import Collection

from box.tasks import build, dev, publish, testbox

ns = Collection()
for module in (dev, build, testbox, publish):
    for t in module.TASKS:
        ns.add_task(t)

ns.configure({"run": {"echo": True}})
