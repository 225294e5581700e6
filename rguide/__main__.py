from rguide.cli import main

raise SystemExit(main())
