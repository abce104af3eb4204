"""moto's standalone server, with each answer that differs from the AWS API shape fixed.

The test suite runs against moto as its AWS-compatible endpoint. Where moto's JSON disagrees
with the AWS API model strictly enough that the Rust SDK refuses to parse it, the fix is made
here, once, and listed:

- ECS `Container.cpu` / `Container.memory` (in RunTask, DescribeTasks, StopTask answers) are
  strings in the AWS API; moto sends numbers (`"cpu": 0`), which the Rust SDK rejects with
  "type mismatch: expected string".

Usage: python scripts/moto_server.py -H 127.0.0.1 -p PORT   (the arguments of moto_server)
"""

import sys

from moto.ecs import models as ecs_models

_container_init = ecs_models.Container.__init__


def _container_init_with_api_types(self, *args, **kwargs):
    _container_init(self, *args, **kwargs)
    for field in ("cpu", "memory"):
        value = getattr(self, field, None)
        if isinstance(value, int):
            setattr(self, field, str(value))


ecs_models.Container.__init__ = _container_init_with_api_types

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main())
