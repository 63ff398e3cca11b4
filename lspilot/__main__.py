from lspilot.cli import main

raise SystemExit(main())
