"""docker-registry-cache tasks: `invoke --list` is the menu; each module below is one concern."""

from invoke import Collection

from box.tasks import dev, publish, testbox

ns = Collection()
for module in (dev, publish, testbox):
    for t in module.TASKS:
        ns.add_task(t)

ns.configure({"run": {"echo": True}})
