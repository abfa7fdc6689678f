from spacesvc.cli import main

raise SystemExit(main())
