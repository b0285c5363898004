from schedctl.commands import main

raise SystemExit(main())
