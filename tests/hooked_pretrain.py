"""The pretrain recipe with the fault hooks of tests/fault_hooks.py installed from the environment.

    XMOCO_TEST_SIGNAL_AT_STEP=11:KILL python tests/hooked_pretrain.py --config ... key=value ...

Without the variables it is recipes/pretrain.py. A test tool: the package holds no test hooks.
"""

import fault_hooks  # beside this script, which Python puts first on sys.path

from xmoco_zoo.pretrain import main

if __name__ == "__main__":
    main(after_step=fault_hooks.install_from_environment())
