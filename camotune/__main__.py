from camotune.cli import main

raise SystemExit(main())
