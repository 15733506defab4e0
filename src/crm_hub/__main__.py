import sys

from crm_hub.cli import main

sys.exit(main())
