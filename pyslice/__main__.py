from pyslice.cli import main

raise SystemExit(main())
