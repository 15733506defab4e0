import sys

from crm_hub.service.cli import main

sys.exit(main())
